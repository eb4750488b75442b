"""The driver interrupted at the moments a random signal rarely hits: while the baseline trains, while
latency is measured, and in the middle of the best-copy (held there by the S4OP_HOLD_AT test hook of
`orchestrator/search/interrupt.py`). One search is interrupted at each in turn (SIGTERM, SIGINT,
SIGKILL), resumed each time; its final ledger equals an uninterrupted run's and no `.best.tmp` or lock
is left."""

from __future__ import annotations

import signal
import time

import pytest

from hardening_search import kill_tree, run, search_env, selections, start, tiny_config

MOMENTS = (("baseline", signal.SIGTERM, 143), ("latency", signal.SIGINT, 130), ("best-copy", signal.SIGKILL, -9))


def _held(log, name: str, proc, timeout: float = 300.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if f"s4op: hold: {name}" in log.read_text(errors="replace"):
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_interrupted_while_training_the_baseline_measuring_latency_or_copying_the_best(tmp_path):
    cfg = tiny_config(tmp_path, "moments", rates=(0.3,))
    log = tmp_path / "log.txt"
    assert run(["search", str(cfg), "--storage", str(tmp_path / "ref")], search_env(tmp_path), log) == 0, \
        log.read_text()[-3000:]
    reference = selections(tmp_path / "ref" / "moments")

    search_dir = tmp_path / "runs" / "moments"
    args = ["search", str(cfg), "--storage", str(tmp_path / "runs")]
    for name, sig, code in MOMENTS:
        env = search_env(tmp_path, S4OP_HOLD_AT=name, S4OP_HOLD_S="120")
        proc = start(args, env, log)
        assert _held(log, name, proc), log.read_text()[-3000:]
        proc.send_signal(sig)
        try:
            rc = proc.wait(timeout=120)
        finally:
            kill_tree(proc, env)
        assert rc == code, (name, rc, log.read_text()[-3000:])
        if sig != signal.SIGKILL:
            last = [x for x in log.read_text(errors="replace").splitlines() if x.strip()][-1]
            assert last.startswith("s4op: interrupted at stage ") and f"s4op resume {search_dir}" in last, last
            assert not (search_dir / "search.lock").exists()
        args = ["resume", str(search_dir)]
    assert run(args, search_env(tmp_path), log) == 0, log.read_text()[-3000:]
    assert selections(search_dir) == reference
    assert not list(search_dir.rglob(".best.tmp")) and not (search_dir / "search.lock").exists()
