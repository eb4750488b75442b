"""The interruption path of a running search (orchestrator/search/interrupt.py), in-process: SIGINT and
SIGTERM become `SearchInterrupted` (exit 130 / 143, one line naming the stage and the resume command);
inside a Tune fit they ask Tune for its graceful stop (SIGUSR1) and raise once the fit returned; a
trial without a final result and without an error is never a failure."""

from __future__ import annotations

import os
import signal
import time

import pytest

from orchestrator.search import interrupt
from orchestrator.search.interrupt import SearchInterrupted, at_stage, interruptible, tune_fit


def _wait_for_signal():
    for _ in range(200):  # the handler runs between bytecodes of the main thread
        time.sleep(0.01)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_outside_tune_raises_with_the_stage_and_the_resume_command(tmp_path, sig, code):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    with pytest.raises(SearchInterrupted) as caught:
        with interruptible(tmp_path / "s"):
            at_stage(2, 0.5)
            os.kill(os.getpid(), sig)
            _wait_for_signal()
    assert caught.value.exit_code == code
    assert str(caught.value) == f"interrupted at stage 2 (rate 0.5): resume with `s4op resume {tmp_path / 's'}`"
    assert {s: signal.getsignal(s) for s in before} == before  # handlers put back


def test_inside_tune_the_signal_asks_tune_to_stop_then_raises_after_fit(tmp_path):
    stopped = []
    with pytest.raises(SearchInterrupted) as caught:
        with interruptible(tmp_path):
            at_stage(1, 0.3)
            with tune_fit():
                signal.signal(signal.SIGUSR1, lambda *_: stopped.append(True))  # what Tune's run() installs
                os.kill(os.getpid(), signal.SIGINT)
                _wait_for_signal()
                assert stopped == [True]  # Tune's graceful stop was asked for; the fit goes on to its end
                reached_end_of_fit = True
    assert reached_end_of_fit and caught.value.exit_code == 130
    assert signal.getsignal(signal.SIGUSR1) is not interrupt._ignore_usr1  # restored on leaving


def test_a_stray_sigusr1_outside_tune_does_not_end_the_driver(tmp_path):
    with interruptible(tmp_path):
        os.kill(os.getpid(), signal.SIGUSR1)
        _wait_for_signal()


def test_a_second_signal_exits_at_once_releasing_the_lock(tmp_path):
    """In a child process: the second signal ends it with 128 + signal, the lock file gone."""
    import subprocess
    import sys

    code = f"""
import os, signal, time
from pathlib import Path
from orchestrator.search.interrupt import interruptible, tune_fit
from orchestrator.search.lock import acquire_lock
d = Path({str(tmp_path)!r})
lock = acquire_lock(d)
with interruptible(d, lock):
    with tune_fit():
        signal.signal(signal.SIGUSR1, lambda *_: None)  # a Tune that takes its time to stop
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(30)
"""
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130, proc.stderr
    assert time.monotonic() - t0 < 20
    assert "stopped at once" in proc.stderr and not (tmp_path / "search.lock").exists()


def test_a_trial_without_result_or_error_is_unfinished_not_failed():
    from orchestrator.search.tune_stage import TrialOutcome

    done = TrialOutcome(None, "seed-1", {"final": True}, None)
    raised = TrialOutcome(None, "seed-2", {"epoch": 1}, "ValueError: boom")
    interrupted = TrialOutcome(None, "seed-3", {"epoch": 1}, None)
    assert [o.unfinished for o in (done, raised, interrupted)] == [False, False, True]
