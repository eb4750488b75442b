"""Stage k >= 1: one pruning rate. Its trials run as a Tune experiment (`tune_stage.py`); then every
finished trial's model is timed with exclusive use of the device (`stage_latency.py`), the best
trial (`best_trial.choose_best` by `search.metric`) is copied to `stages/stage-<k>/best/` and
becomes the next stage's parent; trial rows then the stage row go to the ledger (the stage row
last: it marks the stage complete)."""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from dataclasses import asdict

from orchestrator.search import ledger
from search_spaces.best_trial import choose_best
from orchestrator.search.create import now
from orchestrator.search.interrupt import moment
from orchestrator.search.stage_record import record_stage, register_stage
from orchestrator.search.status import read_starts
from orchestrator.storage.full import STORAGE_ERRNOS, storage_error_in
from orchestrator.tracking import publish
from orchestrator.tracking.tune_callback import flush, prepare
from search_spaces.errors import SearchStateError
from workers.candidate import TrialContext

log = logging.getLogger("s4op.driver")


def trial_context(ctx, k: int, rate: float, parent: str, stage_run_id: str | None) -> TrialContext:
    """What every trial of stage k needs (plain, typed data: part of the Tune param space)."""
    from workers.checkpoint import checkpoint_sha256

    cfg, s = ctx.cfg, ctx.cfg.search
    trials_dir = str(ctx.folder.trials_dir(k))
    if ctx.store is not None:  # the driver and the next stage read trial models from the store
        trials_dir = ctx.store.remote_of(ctx.folder.trials_dir(k))
    return TrialContext(
        search=ctx.name, search_dir=str(ctx.search_dir), search_uri=ctx.store.uri if ctx.store is not None else None,
        stage_dir=str(ctx.folder.stage_dir(k)), trials_dir=trials_dir, stage=k, rate=rate,
        algorithm=s.algorithm.kind, parent_checkpoint=str(parent), parent_sha256=checkpoint_sha256(parent),
        data_fingerprint=ctx.fingerprint, task=cfg.task.name, data_dir=str(cfg.task.data_dir),
        max_len=cfg.task.max_len, val_fraction=float(cfg.task.val_fraction), loader=cfg.task.loader,
        metric=cfg.task.metric, allocation_policy=s.allocation.policy,
        allocation_base=float(s.allocation.base), allocation_layer=s.allocation.layer,
        selection_policy=s.selection.policy, selection_score=s.selection.score,
        selection_candidates=float(s.selection.candidates), bypass=s.bypass, epochs=int(s.finetune.epochs),
        lr=float(s.finetune.lr), weight_decay=float(s.finetune.weight_decay), patience=s.finetune.patience,
        batch_size=int(s.finetune.batch_size), precision=s.finetune.precision,
        cpus_per_trial=max(1, int(math.floor(float(cfg.resources.cpu)))), gpus_per_trial=float(cfg.resources.gpu), tracking_uri=ctx.tracking_uri,
        experiment_id=ctx.experiment_id, stage_run_id=stage_run_id)


def tune_storage(ctx, k: int) -> tuple:
    """(experiment path, storage_path, pyarrow filesystem or None) of stage k's Tune experiment:
    the object store when the search lives there, else `stages/stage-<k>` of the search folder."""
    if ctx.store is not None:
        return ctx.store.tune_storage(k)
    path = ctx.folder.stage_dir(k)
    return path, str(path.parent), None


def _copy_best(ctx, k: int, source: str) -> str:
    best_dir = ctx.folder.best_dir(k)
    if ctx.store is not None:  # best/ in the store (the next stage's parent) and in the working copy
        return ctx.store.copy_best(source, best_dir)
    tmp = ctx.folder.stage_dir(k) / ".best.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(source, tmp)
        moment("best-copy")  # a test hook (S4OP_HOLD_AT): copied, not yet in place
    except BaseException as exc:  # disk full, interrupted: no temporary left; shutil.Error -> its first OSError
        shutil.rmtree(tmp, ignore_errors=True)
        failures = exc.args[0] if isinstance(exc, shutil.Error) and exc.args else []
        for _, target, why in (f for f in failures if isinstance(f, tuple) and len(f) == 3):
            code = next((c for c in STORAGE_ERRNOS if f"[Errno {c}]" in str(why)), None)
            if code is not None:  # the one-line storage error (`storage/full.py`), not shutil's list
                raise OSError(code, str(why), target) from exc
        raise
    shutil.rmtree(best_dir, ignore_errors=True)
    os.replace(tmp, best_dir)
    return str(best_dir)


def run_rate_stage(ctx, k: int, rate: float, parent: str) -> str:
    """Run (or continue) stage k at `rate` from `parent`; returns the best checkpoint folder."""
    from orchestrator.search.tune_stage import run_stage_trials
    from workers.checkpoint import checkpoint_sha256

    cfg = ctx.cfg
    t0, started = time.time(), now()
    n_trials = len(cfg.seed_list) if cfg.search.algorithm.kind == "grid" else int(cfg.search.algorithm.samples)
    ctx.view.stage_started(k, rate, n_trials)
    stage_run = publish.open_stage_run(ctx.tracker, ctx.experiment_id, ctx.name, k, rate, ctx.search_run_id)
    trial_ctx = trial_context(ctx, k, rate, parent, stage_run)
    ctx.folder.stage_dir(k).mkdir(parents=True, exist_ok=True)
    prepare(ctx.tracking_uri, str(ctx.search_dir), ctx.splits.info.metric)
    outcomes = run_stage_trials(cfg, k, trial_ctx, tune_storage(ctx, k), ctx.ray.total_cpus, note=ctx.view.note)
    unfinished = sorted(o.name for o in outcomes if o.unfinished)
    if unfinished:  # interrupted or never started: not failures; the stage stays incomplete
        raise SearchStateError(f"stage {k} (rate {rate:g}): trials {', '.join(unfinished)} ended without a result "
                               f"or an error; nothing recorded; continue with `s4op resume {ctx.search_dir}`")
    full = next((e for e in (storage_error_in(o.error) for o in outcomes) if e is not None), None)
    if full is not None:  # the storage failed, not the trial: nothing recorded, the stage stays incomplete
        raise full
    metric_name = ctx.splits.info.metric
    last_start = {line.get("trial"): line for line in read_starts(ctx.search_dir, k)}  # each trial's last start
    rows = [ledger.finished_trial_row(o.ctx, o.sample, o.name, o.result, o.error, metric_name, o.stopped,
                                      last_start.get(o.name)) for o in outcomes]
    opened = flush()  # the trial runs opened as Tune started them; others (finished before a restore) now
    rows = [ledger.replace(r, mlflow_run_id=opened.get(publish.view.trial_key(ctx.name, r)) or publish.open_trial_run(
        ctx.tracker, ctx.experiment_id, ctx.name, r, stage_run)) for r in rows]
    ok = {r.trial_id: r.checkpoint for r in rows if r.status == "completed"}
    ctx.view.note(f"stage {k}: measuring latency of {len(ok)} models with exclusive use of the device")
    latencies = ctx.latency_of(ok)
    rows = [ledger.with_latency(r, latencies.get(r.trial_id),
                                checkpoint_sha256(r.checkpoint) if r.trial_id in latencies else None) for r in rows]
    dense = next(r for r in ledger.stage_rows(ctx.search_dir) if r.stage == 0)
    # optuna-pareto: the most accurate point of the front, ties to the lower latency
    tie_break = "latency" if cfg.search.algorithm.kind == "optuna-pareto" else cfg.search.tie_break
    best = choose_best([asdict(r) for r in rows], metric=cfg.search.metric, mode="max", tie_break=tie_break)
    if best is None:
        ledger.write_trials(ctx.search_dir, rows)
        ledger.write_stage(ctx.search_dir, ledger.failed_stage_row(ctx.name, k, rate, rows, metric_name, stage_run,
                                                                    started, now()))
        ctx.mirror()
        publish.publish_trials(ctx.tracker, rows, dense, stage_done=True)
        ctx.tracker.finish(stage_run, "FAILED")
        errors = "; ".join(sorted({str(r.error) for r in rows}))[:300]
        raise SearchStateError(f"stage {k} (rate {rate:g}): every trial failed ({errors}); "
                               f"fix the cause and run `s4op resume {ctx.search_dir}`")
    rows = [ledger.replace(r, is_best=r.trial_id == best["trial_id"]) for r in rows]
    best_row = next(r for r in rows if r.is_best)
    best_location = _copy_best(ctx, k, best_row.checkpoint)
    best_dir = ctx.folder.best_dir(k)
    row = ledger.best_stage_row(best_row, rows, dense, checkpoint=best_location, sha256=checkpoint_sha256(best_dir),
                                run_id=stage_run, started_at=started, ended_at=now())
    record_stage(ctx, row, best_dir, rows, dense)
    ledger.write_trials(ctx.search_dir, rows)
    ledger.write_stage(ctx.search_dir, row)
    ctx.mirror()
    try:  # the stage is complete: its per-epoch Tune checkpoints are no longer needed
        from orchestrator.storage.disk import prune_checkpoints

        prune_checkpoints(ctx.search_dir, k)
    except OSError as exc:
        log.warning("stage %d: checkpoint pruning failed: %s", k, exc)
    register_stage(ctx, row, best_dir, best_row.mlflow_run_id)
    ctx.stage_seconds.append(time.time() - t0)
    ctx.view.stage_finished(k, row)
    return best_location
