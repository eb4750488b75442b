"""MLflow runs of trials while a stage runs, written by the driver from Tune's trial events.

Trials never import MLflow: a fresh Ray worker would pay ~2 s of CPU importing it, and many
processes writing one sqlite file contend for its lock. `search/tune_stage.py` turns Tune's events
into calls of `TrialTracking` (trial started: find or create its run under the stage run with its
params; epoch result: log its loss, val metric and seconds at step = epoch). The writes go through a queue to
one thread per (tracking URI, search folder) with its own queueing tracker (a write that still
fails lands in the outbox), so a slow or down server never stalls Tune's event loop.
`flush()` after `.fit()` waits for them and gives the run ids opened; the final figures are then
published from the ledger rows (`tracking/publish.py`), so a driver killed after a trial finished
still logs them on resume. `TrialTracking` holds no state (Tune pickles its callbacks into the
stage's `tuner.pkl`): what the writer needs besides the trial's context is registered by the
driver with `prepare` before each `.fit()`.
"""

from __future__ import annotations

import logging
import queue
import threading

from orchestrator.tracking import ledger_view, publish
from orchestrator.tracking.client import run_key

log = logging.getLogger("s4op.trial_tracking")

_WRITERS: dict[tuple[str, str], "_Writer"] = {}  # (tracking URI, search dir) -> live writer
_LOCK = threading.Lock()


class _Writer:
    """One daemon thread applying queued trial writes in order with its own queueing tracker."""

    def __init__(self, tracking_uri: str, search_dir: str, metric_name: str | None):
        self.tracking_uri, self.search_dir, self.metric_name = tracking_uri, search_dir, metric_name
        self.tasks: queue.Queue = queue.Queue()
        self.run_ids: dict[str, str] = {}  # s4op.key -> run id, for the runs opened here
        self.tracker = None
        threading.Thread(target=self._loop, name="s4op-trial-tracking", daemon=True).start()

    def _loop(self) -> None:
        while True:
            op, args = self.tasks.get()
            try:
                if self.tracker is None:
                    from orchestrator.tracking.outbox import outbox_path, queueing_tracker

                    self.tracker = queueing_tracker(self.tracking_uri, outbox_path(self.search_dir), attempts=3)
                if op == "open":
                    ctx, row = args
                    run_id = publish.open_trial_run(self.tracker, ctx.experiment_id, ctx.search, row,
                                                    ctx.stage_run_id)
                    if run_id:
                        self.run_ids[ledger_view.trial_key(ctx.search, row)] = run_id
                else:
                    key, epoch = args
                    self.tracker.log_metrics(self.run_ids.get(key), ledger_view.epoch_metrics(epoch, self.metric_name),
                                             step=int(epoch["epoch"]))
            except Exception as exc:  # noqa: BLE001 - MLflow is a view; the ledger is the truth
                log.warning("MLflow trial write %s failed: %s", op, exc)
            finally:
                self.tasks.task_done()


def prepare(tracking_uri: str | None, search_dir: str, metric_name: str | None) -> None:
    """Before a stage's `.fit()`: what trial runs of this search need besides the trial context
    (the task metric's name, which names the per-epoch metric)."""
    if not tracking_uri:
        return
    where = (str(tracking_uri), str(search_dir))
    with _LOCK:
        writer = _WRITERS.get(where)
        if writer is None:
            _WRITERS[where] = _Writer(*where, metric_name)
        else:
            writer.metric_name = metric_name


def _writer(ctx) -> "_Writer | None":
    return _WRITERS.get((str(ctx.tracking_uri), str(ctx.search_dir))) if ctx.tracking_uri else None


def flush(timeout_s: float = 120.0) -> dict[str, str]:
    """Wait (up to `timeout_s`) for every queued trial write; {s4op.key: run id} of runs opened."""
    import time

    deadline = time.monotonic() + timeout_s
    ids: dict[str, str] = {}
    for writer in list(_WRITERS.values()):
        while writer.tasks.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)
        if writer.tasks.unfinished_tasks:
            log.warning("MLflow: %d trial writes still queued after %.0f s", writer.tasks.unfinished_tasks, timeout_s)
        ids.update(writer.run_ids)
    return ids


class TrialTracking:
    """Trial events (from `search/tune_stage.py`) -> queued MLflow writes. Holds nothing."""

    def trial_started(self, ctx, row) -> None:
        """`row`: the trial's partial ledger row (its candidate), `row.trial_id` its name."""
        writer = _writer(ctx)
        if writer is not None:
            writer.tasks.put(("open", (ctx, row)))

    def trial_result(self, ctx, name: str, result: dict) -> None:
        writer = _writer(ctx)
        if writer is None or result.get("final") or "epoch" not in result:
            return
        epoch = {k: result.get(k) for k in ("epoch", "loss", "val_metric", "seconds")}
        writer.tasks.put(("metrics", (run_key(ctx.search, ctx.stage, name), epoch)))

    def trial_completed(self, name: str, val_metric) -> None:
        pass

    def trial_failed(self, name: str) -> None:
        pass
