"""One interruption path for a running search: SIGINT (Ctrl-C) and SIGTERM (preemption, `ray job stop`).

The first signal stops the search where it is. A running Tune stage ends through Tune's own graceful
stop (SIGUSR1 to this process: Tune saves its experiment state one last time with the running trials
still RUNNING, so `Tuner.restore` continues each from its last epoch checkpoint); anything else
(data, baseline training, latency measurement, the best copy) is left by raising `SearchInterrupted`
from the signal handler. Nothing interrupted reaches the ledger: the stage stays incomplete, and a
trial is written failed only when its own code raised. The callers' `finally` blocks release the
lock and shut Ray down; the CLI prints one line ("interrupted at stage k (rate r): resume with ...")
and exits 128 + the signal (130, 143). A second signal during that shutdown exits at once: this
driver's child processes (its embedded Ray) are killed, the lock released, and the process ends.
Nothing finished is lost, since every ledger and search.json write replaces its file by rename.

Tune's own SIGINT handler is switched off (`TUNE_DISABLE_SIGINT_HANDLER`), and Ray's SIGTERM
handler (set by `ray.init`, it calls `sys.exit`) is replaced: `arm()` is called again after Ray
starts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SearchInterrupted(BaseException):
    """The driver was asked to stop (SIGINT / SIGTERM). Not an error: nothing is recorded as failed.
    A BaseException, so no `except Exception` on the way (Tune's included) swallows it."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + int(signum)


@dataclass
class _Where:
    search_dir: str
    stage: int = 0
    rate: float = 0.0
    signum: int | None = None
    in_tune: bool = False
    lock: object | None = None
    previous: dict = field(default_factory=dict)

    def message(self) -> str:
        return f"interrupted at stage {self.stage} (rate {self.rate:g}): resume with `s4op resume {self.search_dir}`"


_current: _Where | None = None


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _tune_stopping() -> bool:
    """True when Tune's loop is running and its SIGUSR1 handler (its graceful stop) is installed."""
    handler = signal.getsignal(signal.SIGUSR1)
    return _current is not None and _current.in_tune and callable(handler) and handler is not _ignore_usr1


def _ignore_usr1(signum, frame) -> None:  # outside Tune's loop a stray SIGUSR1 must not end the driver
    return None


def _exit_now(signum, frame) -> None:
    """The second signal: end at once (children killed, lock released); ledger writes are atomic."""
    where = _current
    try:
        import psutil

        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()
    except Exception:  # noqa: BLE001 - exiting anyway
        pass
    if where is not None and where.lock is not None:
        with contextlib.suppress(Exception):
            where.lock.release()
    message = where.message() if where is not None else "interrupted"
    os.write(2, f"s4op: {message} (stopped at once)\n".encode())
    os._exit(128 + int(signum))


def _first_signal(signum, frame) -> None:
    where = _current
    if where is None:  # pragma: no cover - handlers are only installed while a search runs
        raise KeyboardInterrupt
    if where.signum is not None:  # Tune's stop put this handler back for SIGINT: a second signal
        _exit_now(signum, frame)
    where.signum = signum
    for sig in SIGNALS:
        signal.signal(sig, _exit_now)
    if _tune_stopping():
        import logging

        logging.getLogger("ray.tune").setLevel(logging.CRITICAL)  # its "resume with Tuner.restore" advice is not ours
        os.kill(os.getpid(), signal.SIGUSR1)  # Tune's graceful stop; `tune_fit` raises after fit() returns
        return
    raise SearchInterrupted(signum, where.message())


def arm() -> None:
    """(Re)install the handlers of the running search (after `ray.init`, which sets its own)."""
    if _current is None or not _main_thread():
        return
    handler = _exit_now if _current.signum is not None else _first_signal
    for sig in SIGNALS:
        signal.signal(sig, handler)
    if not _current.in_tune:
        signal.signal(signal.SIGUSR1, _ignore_usr1)


@contextlib.contextmanager
def interruptible(search_dir, lock=None):
    """While a search runs: SIGINT/SIGTERM take the path of the module docstring."""
    global _current
    if not _main_thread() or _current is not None:
        yield _current
        return
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    _current = _Where(str(search_dir), lock=lock,
                      previous={s: signal.getsignal(s) for s in (*SIGNALS, signal.SIGUSR1)})
    arm()
    try:
        yield _current
    finally:
        previous, _current = _current.previous, None
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def at_stage(stage: int, rate: float) -> None:
    """Where the search is (for the one-line message)."""
    if _current is not None:
        _current.stage, _current.rate = int(stage), float(rate)


def check() -> None:
    """Raise `SearchInterrupted` when a signal came (after Tune's graceful stop returned)."""
    where = _current
    if where is not None and where.signum is not None:
        raise SearchInterrupted(where.signum, where.message())


@contextlib.contextmanager
def tune_fit():
    """Around `Tuner.fit()`: a signal ends Tune gracefully, then `SearchInterrupted` is raised here."""
    where = _current
    if where is None:
        yield
        return
    where.in_tune = True
    try:
        yield
    finally:
        where.in_tune = False
        if _main_thread():
            signal.signal(signal.SIGUSR1, _ignore_usr1)  # Tune leaves its handler installed
    check()


def report(exc: SearchInterrupted) -> int:
    """The CLI's one line for an interruption; returns the exit code."""
    print(f"s4op: {exc}", file=sys.stderr)
    return exc.exit_code


HOLD_ENV = "S4OP_HOLD_AT"  # a test hook: baseline | latency | best-copy
_held: set[str] = set()


def moment(name: str) -> None:
    """A named moment of the driver (`baseline` training, `latency` measurement, the `best-copy`).

    With S4OP_HOLD_AT=<name> (a test hook, never set by s4op) the driver says "s4op: hold: <name>" on
    stderr the first time it gets there and waits S4OP_HOLD_S seconds (default 30), so that a test can
    interrupt it at exactly that moment; the wait is an ordinary sleep, ended by the signal's handler.
    """
    if os.environ.get(HOLD_ENV) != name or name in _held:
        return
    _held.add(name)
    print(f"s4op: hold: {name}", file=sys.stderr, flush=True)
    time.sleep(float(os.environ.get("S4OP_HOLD_S", "30")))
