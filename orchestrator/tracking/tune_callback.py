"""MLflow runs of trials, written by the driver: a Tune callback feeding one background writer.

Trials never import MLflow: a fresh Ray worker would pay ~2 s of CPU importing it and opening the
store, and many processes writing one sqlite file contend for its lock. Instead the driver opens
each trial's run when Tune starts the trial (found-or-created by `s4op.key =
<search>/stage-<k>/<trial>`, nested under the stage run, with the trial's params and the data
fingerprint tag) and logs each epoch's loss and val metric (step = epoch) as Tune hands the
results over. The writes go through a queue to one thread per tracking URI (a `queueing_tracker`:
a write that still fails lands in the outbox), so a slow or down tracking server never stalls
Tune's event loop. After `.fit()` the driver calls `flush()` and takes the run ids from it; the
final metrics, kept channels and latency are logged from the ledger rows (`log_trial_results`),
so a driver killed after a trial finished still logs them on resume.

The callback holds no state (Tune pickles it into the stage's `tuner.pkl`; `Tuner.restore`
brings it back): everything it needs is in the trial's config (`ctx`, see
`orchestrator/driver.py::trial_context`).
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import tempfile
import threading
from pathlib import Path

from orchestrator.tracking.client import run_key
from workers.trial import trial_name

log = logging.getLogger("s4op.trial_tracking")

_WRITERS: dict[tuple[str, str], "_Writer"] = {}  # (tracking URI, search dir) -> live writer
_LOCK = threading.Lock()


def trial_params(config: dict) -> dict:
    """The MLflow params of one trial: rate, stage, seed, allocation, selection, bypass, budget."""
    ctx = config["ctx"]
    search = ctx["config"]["search"]
    finetune, alloc, selection = search["finetune"], search["allocation"], search["selection"]
    return {
        "rate": ctx["rate"], "stage": ctx["stage"], "seed": int(config["seed"]), "mode": search["mode"],
        "allocation.policy": alloc["policy"], "allocation.base": float(config.get("alloc_base", alloc["base"])),
        "allocation.layer": alloc.get("layer"), "selection.policy": selection["policy"],
        "selection.score": selection.get("score"), "bypass": search["bypass"],
        "finetune.epochs": finetune["epochs"], "finetune.lr": float(config.get("lr", finetune["lr"])),
        "finetune.weight_decay": finetune["weight_decay"], "finetune.patience": finetune["patience"],
        "finetune.batch_size": finetune["batch_size"], "parent_checkpoint": ctx["parent_checkpoint"],
    }


def open_trial_run(tracker, config: dict, trial_id: str) -> str | None:
    """Find or create the trial's run (nested under the stage run) and log its params; its id."""
    ctx = config["ctx"]
    run_id = tracker.run(ctx["experiment_id"], run_key(ctx["search"], ctx["stage"], trial_id), name=trial_id,
                         parent_run_id=ctx.get("stage_run_id"),
                         tags={"s4op.data_fingerprint": ctx.get("data_fingerprint", "")})
    tracker.log_params(run_id, trial_params(config))
    return run_id


class _Writer:
    """One daemon thread applying queued trial writes in order with its own queueing tracker."""

    def __init__(self, tracking_uri: str, search_dir: str):
        self.tracking_uri, self.search_dir = tracking_uri, search_dir
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
                    config, trial_id = args
                    ctx = config["ctx"]
                    run_id = open_trial_run(self.tracker, config, trial_id)
                    if run_id:
                        self.run_ids[run_key(ctx["search"], ctx["stage"], trial_id)] = run_id
                else:
                    key, metrics, step = args
                    self.tracker.log_metrics(self.run_ids.get(key), metrics, step=step)
            except Exception as exc:  # noqa: BLE001 - MLflow is a view; the ledger is the truth
                log.warning("MLflow trial write %s failed: %s", op, exc)
            finally:
                self.tasks.task_done()


def _writer(ctx: dict) -> "_Writer | None":
    if not ctx.get("tracking_uri"):
        return None
    where = (str(ctx["tracking_uri"]), str(ctx["search_dir"]))
    with _LOCK:
        if where not in _WRITERS:
            _WRITERS[where] = _Writer(*where)
        return _WRITERS[where]


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


def track_stage_trials(tracker, trial_ctx: dict, rows: list[dict]) -> None:
    """After a stage's `.fit()`: wait for the queued trial writes, set each ledger row's
    `mlflow_run_id` (a trial this driver did not see start, e.g. one finished before a restore,
    gets its run found or created now; a failed trial's run is ended FAILED), then log each
    completed row's final metrics, kept-channel tags and kept.json on its run."""
    if not trial_ctx.get("tracking_uri"):
        return
    opened = flush()
    for r in rows:
        key = run_key(trial_ctx["search"], trial_ctx["stage"], r["trial_id"])
        config = {"seed": r["seed"], "alloc_base": r["alloc_base"], "lr": r["lr"], "ctx": trial_ctx}
        r["mlflow_run_id"] = opened.get(key) or open_trial_run(tracker, config, r["trial_id"])
        if r["status"] != "completed":
            tracker.finish(r["mlflow_run_id"], "FAILED")
    log_trial_results(tracker, rows)


def log_trial_results(tracker, rows: list[dict]) -> None:
    """Each completed ledger row's final metrics, kept-channel tags and kept.json on its trial run."""
    for r in rows:
        run_id = r.get("mlflow_run_id")
        if not run_id or r.get("status") != "completed":
            continue
        tracker.log_metrics(run_id, {"final_val_metric": r.get("val_metric"), "final_test_metric": r.get("test_metric"),
                                     "params": r.get("params")})
        kept = json.loads(r["kept"]) if r.get("kept") else None
        if kept is None:
            continue
        tracker.set_tags(run_id, {"s4op.kept": json.dumps(kept), "s4op.kept_per_layer": json.dumps([len(k) for k in kept])})
        folder = Path(tempfile.mkdtemp(prefix="s4op-kept-"))
        try:
            (folder / "kept.json").write_text(json.dumps(kept))
            tracker.log_artifact(run_id, folder / "kept.json")
        finally:
            shutil.rmtree(folder, ignore_errors=True)


try:  # the driver has Ray; importing this module elsewhere must not need it
    from ray.tune import Callback as _TuneCallback
except ImportError:  # pragma: no cover
    _TuneCallback = object


class TrialTracking(_TuneCallback):
    """Opens each trial's MLflow run when Tune starts it and logs its per-epoch metrics (queued)."""

    @staticmethod
    def _config(trial) -> dict:
        """The trial's config, its ctx pointed at this driver's working copy (a restored trial
        keeps the ctx of the driver that started it; see `workers.objectstore.with_working_copy`)."""
        from workers.objectstore import with_working_copy

        config = dict(trial.config or {})
        config["ctx"] = with_working_copy(config.get("ctx") or {})
        return config

    def on_trial_start(self, iteration, trials, trial, **info):
        config = self._config(trial)
        writer = _writer(config["ctx"])
        if writer is not None:
            writer.tasks.put(("open", (config, trial_name(config, trial.trial_id))))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        config = self._config(trial)
        ctx = config["ctx"]
        writer = _writer(ctx)
        if writer is None or result.get("final") or "epoch" not in result:
            return
        key = run_key(ctx["search"], ctx["stage"], trial_name(config, trial.trial_id))
        writer.tasks.put(("metrics", (key, {"loss": result.get("loss"), "val_metric": result.get("val_metric")},
                                      int(result["epoch"]))))
