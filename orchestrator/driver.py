"""The stage loop: stage 0 = the dense baseline, then one Ray Tune experiment per pruning rate.

search folder `<storage>/<name>/`: config.yaml, search.json (tracking URI, experiment), search.lock,
ledger/, baseline/, stages/stage-<k>/ (Tune experiment, trial models, starts.log, best/), mlflow.db.

For each rate r_k (k = 1..K): trials = seeds (grid) or Optuna samples, each `workers.trial.run_trial`
on `tune.with_resources`; then latency of every finished trial's model with exclusive use of the
device (`stage_latency`); the best trial (`selection_rule.choose_best`) is copied to
`stages/stage-<k>/best/` and becomes stage k+1's parent (one-shot mode: the baseline always is);
trial rows then the stage row go to the ledger (the stage row last: it marks the stage complete).
An interrupted stage is continued with `Tuner.restore(resume_errored=True)`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")  # a killed driver loses <= 1 s of Tune state
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

from orchestrator import ledger
from orchestrator.lock import acquire_lock
from orchestrator.selection_rule import choose_best, reduction_pct, speedup_pct
from orchestrator.tracking import Tracker, default_tracking_uri, run_key
from search_spaces.errors import SearchStateError

log = logging.getLogger("s4op.driver")

META_NAME = "search.json"
CONFIG_NAME = "config.yaml"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def stage_dir(search_dir: Path, stage: int) -> Path:
    return Path(search_dir) / "stages" / f"stage-{stage}"


def read_meta(search_dir: str | os.PathLike) -> dict:
    path = Path(search_dir) / META_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SearchStateError(f"{path} not found; expected a search folder made by `s4op search`") from None
    except ValueError as exc:
        raise SearchStateError(f"{path} is not valid JSON ({exc})") from None


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- Ray
_RAY_STARTED_HERE = False


@dataclass
class RayHandle:
    started_here: bool
    total_cpus: int


def start_ray(address: str | None, *, num_cpus: int | None = None) -> RayHandle:
    """Connect to (or embed) Ray. "local"/None: `ray.init(address="local", num_cpus=...)`."""
    import ray

    global _RAY_STARTED_HERE
    if ray.is_initialized():
        return RayHandle(_RAY_STARTED_HERE, int(ray.cluster_resources().get("CPU", 1)))
    _RAY_STARTED_HERE = True
    common = dict(include_dashboard=False, log_to_driver=bool(os.environ.get("S4OP_RAY_LOGS")),
                  configure_logging=True, logging_level=logging.WARNING)
    if address in (None, "", "local"):
        from orchestrator import warm_workers

        cpus = int(num_cpus or os.environ.get("S4OP_NUM_CPUS") or len(os.sched_getaffinity(0)))
        inherited = warm_workers.prepare()  # the environment the embedded Ray's workers inherit
        ray.init(address="local", num_cpus=cpus, object_store_memory=200 * 1024**2,
                 _system_config=warm_workers.system_config(cpus), **common)
        warm_workers.install(inherited)  # trial actors may then start in Ray's idle, warm workers
    else:
        ray.init(address=address, **common)
    return RayHandle(True, int(ray.cluster_resources().get("CPU", 1)))


# ----------------------------------------------------------------------------- setup
def create_search(cfg, *, storage: str | os.PathLike = "s4op-runs", name: str | None = None,
                  tracking_uri: str | None = None, address: str | None = "local",
                  allow_local_storage: bool = False, work_dir: str | os.PathLike | None = None):
    """Make `<storage>/<name>/` with config, search.json, lock, empty ledger and the MLflow store.

    Returns (search_dir, held lock). An existing search folder is refused (use `s4op resume`).
    An object-store `storage` (s3://, gs://): search_dir is the local working copy under `work_dir`
    (`orchestrator/remote.py`), mirrored to `<storage>/<name>/`.
    """
    from search_spaces.config import dump_config

    name = name or cfg.name
    if address not in (None, "", "local"):
        start_ray(address)  # the storage check needs the cluster's node count
    try:
        from cluster.storage import check_search_storage

        storage = check_search_storage(str(storage), address=address, allow_local_storage=allow_local_storage,
                                       n_nodes=None if address not in (None, "", "local") else 1)
    except ImportError:  # pragma: no cover
        storage = str(Path(storage).resolve())
    store = None
    if "://" in str(storage):  # object store: a local working copy mirrored to the URI
        from orchestrator.remote import SearchStore, check_tracking_reachable

        check_tracking_reachable(str(storage), tracking_uri, address)
        store = SearchStore.create(str(storage), name, work_dir=work_dir)
        search_dir, lock = store.local, store.lock()
        search_dir.mkdir(parents=True, exist_ok=True)
    else:
        search_dir = Path(storage) / name
        search_dir.mkdir(parents=True, exist_ok=True)
        lock = acquire_lock(search_dir)
    try:
        if (search_dir / CONFIG_NAME).exists():
            raise SearchStateError(f"search folder {search_dir} already exists; continue it with "
                                   f"`s4op resume {search_dir}` or choose another --name")
        tracking_uri = tracking_uri or default_tracking_uri(search_dir)
        meta = {"name": name, "tracking_uri": tracking_uri, "experiment": name, "created_at": _now(),
                "address": address, "host": socket.gethostname(), "config": cfg.model_dump(mode="json")}
        if store is not None:
            meta.update(search_uri=store.uri, tracking_in_work_copy=tracking_uri == default_tracking_uri(search_dir))
        _write_text_atomic(search_dir / META_NAME, json.dumps(meta, indent=1))
        ledger.write_trials(search_dir, [])
        Tracker(tracking_uri).open_experiment(name, artifact_dir=search_dir / "mlartifacts")  # store made here first
        _write_text_atomic(search_dir / CONFIG_NAME, dump_config(cfg))  # last: marks the folder complete
        if store is not None:
            store.push()  # config.yaml last
    except BaseException:
        lock.release()
        raise
    return search_dir, lock


def load_stored_config(search_dir: str | os.PathLike):
    from search_spaces.config import load_search_config

    path = Path(search_dir) / CONFIG_NAME
    if not path.exists():
        raise SearchStateError(f"{path} not found; expected a search folder made by `s4op search`")
    return load_search_config(path)


# ----------------------------------------------------------------------------- the loop
@dataclass
class SearchContext:
    search_dir: Path
    cfg: object
    name: str
    tracking_uri: str
    tracker: Tracker
    experiment_id: str
    search_run_id: str | None
    splits: object = None
    fingerprint: str = ""
    view: object = None
    ray: RayHandle | None = None
    address: str | None = "local"
    stage_seconds: list = field(default_factory=list)
    store: object = None  # orchestrator.remote.SearchStore when the search lives on an object store


def start_search(cfg, *, storage: str | os.PathLike = "s4op-runs", name: str | None = None,
                 tracking_uri: str | None = None, address: str | None = "local",
                 allow_local_storage: bool = False, view=None, num_cpus: int | None = None,
                 work_dir: str | os.PathLike | None = None) -> Path:
    """`s4op search`: create `<storage>/<name>/` (config, lock, ledger, MLflow) and run it to the end."""
    search_dir, lock = create_search(cfg, storage=storage, name=name, tracking_uri=tracking_uri, address=address,
                                     allow_local_storage=allow_local_storage, work_dir=work_dir)
    try:
        return run_locked(search_dir, cfg, read_meta(search_dir), address=address, view=view, num_cpus=num_cpus)
    finally:
        lock.release()


def run_search(search_dir: str | os.PathLike, *, address: str | None = "local", view=None,
               num_cpus: int | None = None) -> Path:
    """Run (or continue) the search in `search_dir` to the end; returns the folder.

    Completed stages (ledger) are skipped; an interrupted stage is restored from its Tune state.
    """
    search_dir = Path(search_dir).resolve()
    lock = acquire_lock(search_dir)
    try:
        cfg = load_stored_config(search_dir)
        return run_locked(search_dir, cfg, read_meta(search_dir), address=address, view=view, num_cpus=num_cpus)
    finally:
        lock.release()


def run_locked(search_dir: Path, cfg, meta: dict, *, address, view, num_cpus) -> Path:
    """The stage loop; the caller holds the search lock."""
    from orchestrator.view import SearchView

    name = meta["name"]
    from orchestrator.outbox import outbox_path, queueing_tracker

    tracker = queueing_tracker(meta["tracking_uri"], outbox_path(search_dir))  # failed writes -> outbox
    experiment_id = tracker.open_experiment(meta.get("experiment", name), artifact_dir=search_dir / "mlartifacts")
    search_run = tracker.run(experiment_id, run_key(name), name=name, tags={"s4op.search_dir": str(search_dir)})
    s = cfg.search
    tracker.log_params(search_run, {
        "task": cfg.task.name, "model.kind": cfg.model.kind, "model.d_model": cfg.model.d_model,
        "model.n_layers": cfg.model.n_layers, "rates": json.dumps(list(s.rates)),
        "seeds": json.dumps(cfg.seed_list), "mode": s.mode, "algorithm": s.algorithm.kind,
        "allocation.policy": s.allocation.policy, "allocation.base": s.allocation.base,
        "selection.policy": s.selection.policy, "bypass": s.bypass, "finetune.epochs": s.finetune.epochs,
        "finetune.lr": s.finetune.lr})
    view = view or SearchView(n_stages=len(s.rates), search=name)
    ctx = SearchContext(search_dir, cfg, name, meta["tracking_uri"], tracker, experiment_id, search_run, view=view,
                        address=address)
    from orchestrator.remote import store_of

    ctx.store = store_of(meta, search_dir)
    if ctx.store is not None:  # before Ray starts: restored trials follow this working copy
        ctx.store.export_work_copy(meta)
    try:
        ctx.splits, ctx.fingerprint = _prepare_data(cfg)
        tracker.set_tags(search_run, {"s4op.data_fingerprint": ctx.fingerprint})
        done = set(ledger.completed_stages(search_dir))
        recorded = {k: _stage_checkpoint(search_dir, k) for k in done}  # verified before anything runs
        ctx.ray = start_ray(address, num_cpus=num_cpus)
        view.start()
        parent = _stage0(ctx) if 0 not in done else recorded[0]
        baseline = parent
        for k, rate in enumerate(s.rates, start=1):
            if k in done:
                parent = recorded[k] if s.mode == "incremental" else baseline
                view.stage_skipped(k, rate)
                continue
            best = _run_stage(ctx, k, float(rate), parent)
            parent = best if s.mode == "incremental" else baseline
        tracker.finish(search_run)
        from orchestrator.latency_noise import protocol_from_config

        view.finish(ledger.read_stages(search_dir), metric_name=ctx.splits.info.metric,
                    protocol=protocol_from_config(cfg.latency, ctx.splits.test.x.shape[1]))
    finally:
        view.stop()
        if ctx.ray is not None and ctx.ray.started_here:
            import ray

            from orchestrator import warm_workers

            global _RAY_STARTED_HERE
            ray.shutdown()
            warm_workers.uninstall()
            _RAY_STARTED_HERE = False
    return search_dir


def _prepare_data(cfg):
    """Generate the task's data if the config says how and it is missing; load it; fingerprint."""
    from orchestrator.baseline import prepare_data

    return prepare_data(cfg)


def _stage_checkpoint(search_dir: Path, stage: int) -> str:
    """The checkpoint a completed stage recorded, after checking it is byte-identical (sha256)."""
    from search_spaces.errors import CheckpointError
    from workers.checkpoint import checkpoint_sha256

    stages = ledger.read_stages(search_dir)
    row = stages.loc[stages["stage"] == stage]
    if row.empty or not row.iloc[0]["checkpoint"]:
        raise SearchStateError(f"{ledger.stages_path(search_dir)}: stage {stage} has no checkpoint")
    path, expected = str(row.iloc[0]["checkpoint"]), row.iloc[0]["checkpoint_sha256"]
    actual = checkpoint_sha256(path)
    if expected and actual != expected:
        raise CheckpointError(f"checkpoint {path} was altered since stage {stage} recorded it (sha256 {actual[:12]} "
                              f"!= ledger {str(expected)[:12]}); restore it or start a new search")
    return path


def _latency_of(ctx: SearchContext, models: dict[str, str]) -> dict[str, dict]:
    """{id: latency dict at the first batch size} measured with exclusive use of the device."""
    from orchestrator.stage_latency import latency_examples, measure_stage

    lat = ctx.cfg.latency
    examples = latency_examples(ctx.splits.test.x, ctx.splits.test.lengths, list(lat.batch_sizes))
    embedded = ctx.ray is None or (ctx.ray.started_here and ctx.address in (None, "", "local"))
    measured = measure_stage(models, examples, lat.model_dump(mode="json"), in_process=embedded and lat.device == "cpu")
    first = int(lat.batch_sizes[0])
    return {key: by_batch[first] | {"all": by_batch} for key, by_batch in measured.items()}


def _stage0(ctx: SearchContext) -> str:
    """The dense baseline: the configured checkpoint (copied in) or one trained now."""
    from workers.checkpoint import checkpoint_sha256, load_checkpoint
    from workers.pruning import count_parameters, kept_channels
    from workers.training import evaluate

    cfg, search_dir = ctx.cfg, ctx.search_dir
    started = _now()
    ctx.view.stage_started(0, 0.0, 0)
    stage_run = ctx.tracker.run(ctx.experiment_id, run_key(ctx.name, 0), name="stage-0 (dense)",
                                parent_run_id=ctx.search_run_id)
    target = search_dir / "baseline"
    if cfg.baseline.checkpoint is not None:
        source = Path(cfg.baseline.checkpoint)
        if not (source / "model.json").exists():
            from search_spaces.errors import CheckpointError

            raise CheckpointError(f"baseline.checkpoint {source}: model.json not found; expected a checkpoint folder")
        if not (target / "model.json").exists():
            tmp = search_dir / ".baseline.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(source, tmp)
            os.replace(tmp, target)
        checkpoint = target
    else:
        from orchestrator.baseline import train_baseline

        checkpoint = Path(train_baseline(cfg, target, tracking_uri=ctx.tracking_uri, parent_run_id=stage_run,
                                               run_key=run_key(ctx.name, 0, "baseline")))
    model, _ = load_checkpoint(checkpoint)
    batch = cfg.search.finetune.batch_size
    val = float(evaluate(model, ctx.splits.val, ctx.splits.info, batch_size=batch))
    test = float(evaluate(model, ctx.splits.test, ctx.splits.info, batch_size=batch))
    params = int(count_parameters(model))
    kept = kept_channels(model)
    del model
    latency = _latency_of(ctx, {"baseline": str(checkpoint)})["baseline"]
    row = {
        "search": ctx.name, "stage": 0, "rate": 0.0, "status": "completed", "n_trials": 0, "n_failed": 0,
        "best_trial_id": "baseline", "best_seed": None, "metric_name": ctx.splits.info.metric,
        "val_metric": val, "test_metric": test, "latency_p50_ms": latency["p50_ms"],
        "latency_p90_ms": latency["p90_ms"], "params": params, "speedup_pct": 0.0, "param_reduction_pct": 0.0,
        "kept": ledger.encode_kept(kept), "checkpoint": str(checkpoint),
        "checkpoint_sha256": checkpoint_sha256(checkpoint), "mlflow_run_id": stage_run or "",
        "started_at": started, "ended_at": _now(),
    }
    _track_stage(ctx, 0, row, checkpoint, latency)
    if ctx.store is not None:  # trials on every node read the parent from the object store
        row["checkpoint"] = ctx.store.push_checkpoint(checkpoint)
    ledger.write_stage(search_dir, row)
    _mirror(ctx)
    ctx.view.stage_finished(0, row)
    return row["checkpoint"]


def _mirror(ctx: SearchContext) -> None:
    """After a ledger write: mirror the working copy to the object store (no-op for a folder)."""
    if ctx.store is not None:
        ctx.store.push()


def _track_stage(ctx: SearchContext, k: int, row: dict, best_dir: Path, latency: dict) -> None:
    from orchestrator.view import stage_plot

    t, run = ctx.tracker, row["mlflow_run_id"] or None
    t.log_params(run, {"rate": row["rate"], "stage": k, "best_trial": row["best_trial_id"]})
    t.log_metrics(run, {"val_metric": row["val_metric"], "test_metric": row["test_metric"],
                        "latency_p50_ms": row["latency_p50_ms"], "latency_p90_ms": row["latency_p90_ms"],
                        "params": row["params"], "speedup_pct": row["speedup_pct"],
                        "param_reduction_pct": row["param_reduction_pct"]})
    t.set_tags(run, {"s4op.kept_per_layer": json.dumps([len(x) for x in ledger.decode_kept(row["kept"])]),
                     "s4op.latency_protocol": json.dumps({x: latency.get(x) for x in ("device", "threads", "batch", "length", "repeats")}),
                     "s4op.data_fingerprint": ctx.fingerprint})
    t.log_artifact(run, best_dir, "best_checkpoint")
    plots = ctx.search_dir / "plots"
    plots.mkdir(exist_ok=True)
    kept_file = plots / f"stage-{k}-kept.json"
    kept_file.write_text(row["kept"])
    t.log_artifact(run, kept_file)
    stages = ledger.read_stages(ctx.search_dir)
    stages = stages[stages["stage"] != k]
    import pandas as pd

    stages = pd.concat([stages, pd.DataFrame([row])], ignore_index=True).sort_values("stage")
    try:
        png = stage_plot(stages, plots / f"stage-{k}-progress.png", metric_name=row["metric_name"])
        t.log_artifact(run, png)
    except Exception as exc:  # noqa: BLE001 - a plot never fails a search
        log.warning("stage plot failed: %s", exc)
    t.log_metrics(ctx.search_run_id, {"val_metric": row["val_metric"], "test_metric": row["test_metric"],
                                      "latency_p50_ms": row["latency_p50_ms"], "speedup_pct": row["speedup_pct"],
                                      "params": row["params"]}, step=k)
    t.finish(run)


def trial_context(ctx: SearchContext, k: int, rate: float, parent: str, stage_run_id: str | None,
                  cpus_per_trial: float) -> dict:
    """What every trial of stage k needs (plain data, part of the Tune param space)."""
    from workers.checkpoint import checkpoint_sha256

    return {
        "search": ctx.name, "search_dir": str(ctx.search_dir), "stage": k, "rate": rate,
        "parent_checkpoint": str(parent), "parent_sha256": checkpoint_sha256(parent),
        "config": ctx.cfg.model_dump(mode="json"), "tracking_uri": ctx.tracking_uri,
        "experiment_id": ctx.experiment_id, "stage_run_id": stage_run_id,
        "data_fingerprint": ctx.fingerprint, "algorithm": ctx.cfg.search.algorithm.kind,
        "cpus_per_trial": max(1, int(math.floor(cpus_per_trial))),
        "search_uri": ctx.store.uri if ctx.store is not None else None,
    }


def _tune_storage(ctx: SearchContext, k: int):
    """(experiment path, storage_path, pyarrow filesystem or None) of stage k's Tune experiment:
    the object store when the search lives there, else `stages/stage-<k>` of the search folder."""
    if ctx.store is not None:  # Tune's state and trial checkpoints live in the object store
        return ctx.store.tune_storage(k)
    path = stage_dir(ctx.search_dir, k)
    return path, str(path.parent), None


def _tuner(ctx: SearchContext, k: int, trial_ctx: dict, view_callback):
    """A new Tuner for stage k, or the interrupted one restored from `stages/stage-<k>`."""
    from ray import tune

    from orchestrator.trial_tracking import TrialTracking
    from workers.trial import run_trial

    cfg, s = ctx.cfg, ctx.cfg.search
    resources = {"cpu": float(cfg.resources.cpu), "gpu": float(cfg.resources.gpu)}
    trainable = tune.with_resources(run_trial, resources)
    path, storage_path, fs = _tune_storage(ctx, k)
    if s.algorithm.kind == "optuna":
        lr = float(s.finetune.lr)
        param_space = {"seed": tune.choice(cfg.seed_list), "alloc_base": tune.uniform(1.25, 3.0),
                       "lr": tune.loguniform(lr / 3.0, lr * 3.0), "ctx": trial_ctx}
    else:
        param_space = {"seed": tune.grid_search(cfg.seed_list), "ctx": trial_ctx}
    if tune.Tuner.can_restore(str(path), storage_filesystem=fs):
        return tune.Tuner.restore(str(path), trainable, resume_errored=True, param_space=param_space,
                                  storage_filesystem=fs)
    per_node = max(1, int(ctx.ray.total_cpus // max(resources["cpu"], 1e-9)))
    concurrent = cfg.resources.max_concurrent or per_node
    search_alg, samples = None, 1
    if s.algorithm.kind == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        sampler = optuna.samplers.TPESampler(seed=int(s.algorithm.seed) + k)
        search_alg = OptunaSearch(metric="val_metric", mode="max", sampler=sampler)  # in-memory storage
        samples = int(s.algorithm.samples)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(num_samples=samples, search_alg=search_alg,
                                    max_concurrent_trials=int(concurrent), reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"stage-{k}", storage_path=storage_path, storage_filesystem=fs, verbose=0,
            failure_config=tune.FailureConfig(max_failures=2),
            # object store: Tune deleting old checkpoints races its lagging state upload (a killed driver's
            # state can name a deleted one); they are pruned when the stage completes (disk.prune_checkpoints)
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2 if fs is None else None),
            callbacks=[view_callback, TrialTracking()]),  # trials' MLflow runs, written by the driver
    )


def _ended_stage_results(ctx: SearchContext, k: int):
    """The results of an interrupted stage k whose trials had all finished before the driver died,
    or None. Tune's restore can then leave its searcher unfinished (its state and the experiment
    state are saved separately, and on an object store uploaded separately), and `fit()` would wait
    forever for a next trial; the finished trials' results are read from the experiment state."""
    from ray.tune import ExperimentAnalysis, Tuner
    from ray.tune.result_grid import ResultGrid

    s = ctx.cfg.search
    path, _, fs = _tune_storage(ctx, k)
    if not Tuner.can_restore(str(path), storage_filesystem=fs):
        return None
    try:
        grid = ResultGrid(ExperimentAnalysis(str(path), storage_filesystem=fs))
    except Exception as exc:  # noqa: BLE001 - an unreadable state: let Tune's own restore decide
        log.debug("stage %d: restored results not readable (%s)", k, exc)
        return None
    expected = len(ctx.cfg.seed_list) if s.algorithm.kind == "grid" else int(s.algorithm.samples)
    if len(grid) >= expected and all((r.metrics or {}).get("final") for r in grid):
        ctx.view.note(f"stage {k}: every trial had finished before the interruption; not running it again")
        return grid
    return None


def _trial_rows(ctx: SearchContext, k: int, rate: float, trial_ctx: dict, grid) -> list[dict]:
    rows = []
    for result in grid:
        m = dict(result.metrics or {})
        config = result.config or {}
        seed = int(config.get("seed", m.get("seed", -1)))
        if ctx.cfg.search.algorithm.kind == "grid":
            trial_id = f"seed-{seed}"
        else:
            trial_id = str(m.get("trial") or m.get("trial_id") or Path(result.path).name)
        ok = bool(m.get("final"))  # the final report came: the trial's model is saved
        error = None if ok else (str(result.error).strip().splitlines() or ["no final report"])[-1][:500]
        rows.append({
            "search": ctx.name, "stage": k, "rate": rate, "seed": seed, "trial_id": trial_id,
            "status": "completed" if ok else "failed", "error": error,
            "metric_name": ctx.splits.info.metric,
            "val_metric": m.get("val_metric") if ok else None, "test_metric": m.get("test_metric") if ok else None,
            "params": m.get("params") if ok else None, "kept": m.get("kept") if ok else None,
            "alloc_base": float(config.get("alloc_base", ctx.cfg.search.allocation.base)),
            "lr": float(config.get("lr", ctx.cfg.search.finetune.lr)),
            "epochs_run": m.get("epochs_run") if ok else m.get("epoch"),
            "parent_checkpoint": trial_ctx["parent_checkpoint"], "parent_sha256": trial_ctx["parent_sha256"],
            "checkpoint": m.get("model_dir") if ok else None, "mlflow_run_id": m.get("mlflow_run_id") or None,
            "started_at": m.get("started_at"), "ended_at": m.get("ended_at"), "node": m.get("node"),
            "is_best": False,
        })
    return rows


def _run_stage(ctx: SearchContext, k: int, rate: float, parent: str) -> str:
    """Run (or continue) stage k at `rate` from `parent`; returns the best checkpoint folder."""
    from orchestrator.trial_tracking import track_stage_trials
    from orchestrator.view import ViewCallback
    from workers.checkpoint import checkpoint_sha256

    cfg, search_dir = ctx.cfg, ctx.search_dir
    t0 = time.time()
    started = _now()
    n_trials = len(cfg.seed_list) if cfg.search.algorithm.kind == "grid" else int(cfg.search.algorithm.samples)
    ctx.view.stage_started(k, rate, n_trials)
    stage_run = ctx.tracker.run(ctx.experiment_id, run_key(ctx.name, k), name=f"stage-{k} (rate {rate:g})",
                                parent_run_id=ctx.search_run_id)
    ctx.tracker.log_params(stage_run, {"parent_checkpoint": parent})
    trial_ctx = trial_context(ctx, k, rate, parent, stage_run, float(cfg.resources.cpu))
    stage_dir(search_dir, k).mkdir(parents=True, exist_ok=True)
    tuner = _tuner(ctx, k, trial_ctx, ViewCallback())
    grid = _ended_stage_results(ctx, k) or tuner.fit()
    rows = _trial_rows(ctx, k, rate, trial_ctx, grid)
    track_stage_trials(ctx.tracker, trial_ctx, rows)  # run ids, final metrics and kept of each trial
    ok = {r["trial_id"]: r["checkpoint"] for r in rows if r["status"] == "completed"}
    ctx.view.note(f"stage {k}: measuring latency of {len(ok)} models with exclusive use of the device")
    latencies = _latency_of(ctx, ok)
    for r in rows:
        lat = latencies.get(r["trial_id"])
        if lat is not None:
            r.update(latency_p50_ms=lat["p50_ms"], latency_p90_ms=lat["p90_ms"], latency_batch=lat["batch"],
                     latency_threads=lat["threads"], latency_length=lat["length"], latency_device=lat["device"])
            r["checkpoint_sha256"] = checkpoint_sha256(r["checkpoint"])
    best = choose_best(rows, metric="val_metric", mode="max", tie_break=cfg.search.tie_break)
    if best is None:
        ledger.write_trials(search_dir, rows)
        failed = {"search": ctx.name, "stage": k, "rate": rate, "status": "failed", "n_trials": len(rows),
                  "n_failed": len(rows), "metric_name": ctx.splits.info.metric, "mlflow_run_id": stage_run,
                  "started_at": started, "ended_at": _now()}
        ledger.write_stage(search_dir, failed)
        _mirror(ctx)
        ctx.tracker.finish(stage_run, "FAILED")
        errors = "; ".join(sorted({str(r["error"]) for r in rows}))[:300]
        raise SearchStateError(f"stage {k} (rate {rate:g}): every trial failed ({errors}); "
                               f"fix the cause and run `s4op resume {search_dir}`")
    best["is_best"] = True
    best_dir = stage_dir(search_dir, k) / "best"
    best_location = str(best_dir)
    if ctx.store is not None:  # best/ in the store (the next stage's parent) and in the working copy
        best_location = ctx.store.copy_best(best["checkpoint"], best_dir)
    else:
        tmp = stage_dir(search_dir, k) / ".best.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(best["checkpoint"], tmp)
        shutil.rmtree(best_dir, ignore_errors=True)
        os.replace(tmp, best_dir)
    dense = ledger.read_stages(search_dir)
    dense = dense.loc[dense["stage"] == 0].iloc[0]
    for r in rows:
        ctx.tracker.log_metrics(r["mlflow_run_id"], {
            "latency_p50_ms": r.get("latency_p50_ms"), "latency_p90_ms": r.get("latency_p90_ms"),
            "speedup_pct": speedup_pct(r.get("latency_p50_ms"), dense["latency_p50_ms"])})
        ctx.tracker.set_tags(r["mlflow_run_id"], {"s4op.is_best": r["is_best"], "s4op.status": r["status"]})
        ctx.tracker.finish(r["mlflow_run_id"], "FINISHED" if r["status"] == "completed" else "FAILED")
    row = {
        "search": ctx.name, "stage": k, "rate": rate, "status": "completed", "n_trials": len(rows),
        "n_failed": sum(r["status"] != "completed" for r in rows), "best_trial_id": best["trial_id"],
        "best_seed": best["seed"], "metric_name": best["metric_name"], "val_metric": best["val_metric"],
        "test_metric": best["test_metric"], "latency_p50_ms": best["latency_p50_ms"],
        "latency_p90_ms": best["latency_p90_ms"], "params": best["params"],
        "speedup_pct": speedup_pct(best["latency_p50_ms"], dense["latency_p50_ms"]),
        "param_reduction_pct": reduction_pct(best["params"], dense["params"]), "kept": best["kept"],
        "checkpoint": best_location, "checkpoint_sha256": checkpoint_sha256(best_dir),
        "mlflow_run_id": stage_run or "", "started_at": started, "ended_at": _now(),
    }
    _track_stage(ctx, k, row, best_dir, latencies[best["trial_id"]])
    ledger.write_trials(search_dir, rows)
    ledger.write_stage(search_dir, row)
    _mirror(ctx)
    try:  # the stage is complete: its per-epoch Tune checkpoints are no longer needed
        from orchestrator.disk import prune_checkpoints

        prune_checkpoints(search_dir, k)
    except OSError as exc:
        log.warning("stage %d: checkpoint pruning failed: %s", k, exc)
    try:
        from orchestrator.registry import register_stage_best

        register_stage_best(ctx.tracking_uri, ctx.name, k, rate, best_dir, stage_run)
    except Exception as exc:  # noqa: BLE001 - registration is a view; the ledger is the truth
        log.warning("model registry: stage %d not registered: %s", k, exc)
    ctx.stage_seconds.append(time.time() - t0)
    ctx.view.stage_finished(k, row)
    return best_location
