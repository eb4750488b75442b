"""Stage 0: the dense baseline (the configured checkpoint copied in, or one trained now), evaluated
and timed like every stage's best model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from orchestrator.search import ledger
from orchestrator.search.create import now
from orchestrator.search.stage_record import record_stage, register_stage
from orchestrator.tracking import ledger_view, publish
from orchestrator.tracking.client import run_key
from search_spaces.errors import CheckpointError, SearchStateError

LATENCY_PROTOCOL = ("device", "threads", "batch", "length", "repeats")


def verified_stage_checkpoint(search_dir: Path, stage: int) -> str:
    """The checkpoint a completed stage recorded, after checking it is byte-identical (sha256)."""
    from workers.checkpoint import checkpoint_sha256

    row = next((r for r in ledger.stage_rows(search_dir) if r.stage == stage), None)
    if row is None or not row.checkpoint:
        raise SearchStateError(f"{ledger.stages_path(search_dir)}: stage {stage} has no checkpoint")
    path, expected = row.checkpoint, row.checkpoint_sha256
    actual = checkpoint_sha256(path)
    if expected and actual != expected:
        raise CheckpointError(f"checkpoint {path} was altered since stage {stage} recorded it (sha256 {actual[:12]} "
                              f"!= ledger {str(expected)[:12]}); restore it or start a new search")
    return path


def _baseline_checkpoint(ctx, stage_run: str | None) -> Path:
    cfg, folder = ctx.cfg, ctx.folder
    target = folder.baseline_dir
    if cfg.baseline.checkpoint is None:
        from orchestrator.search.baseline_remote import train_remote

        return train_remote(cfg, target.resolve(), folder.baseline_train_dir.resolve(), tracking_uri=ctx.tracking_uri,
                            parent_run_id=stage_run, run_key=run_key(ctx.name, 0, "baseline"),
                            progress=lambda e: ctx.view.note(f"baseline epoch {e['epoch']}/{cfg.baseline.train.epochs}: "
                                                             f"val {e['val_metric']:.4f} on {e['train_device']}"))
    source = Path(cfg.baseline.checkpoint)
    if not (source / "model.json").exists():
        raise CheckpointError(f"baseline.checkpoint {source}: model.json not found; expected a checkpoint folder")
    if not (target / "model.json").exists():
        tmp = folder.root / ".baseline.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        os.replace(tmp, target)
    _record_source(ctx, source)
    return target


def _record_source(ctx, source: Path) -> None:
    """Provenance of a baseline the search did not train: search.json facts and the search run's tags."""
    from workers.checkpoint import checkpoint_sha256, read_meta

    run_id = (read_meta(source).get("extra") or {}).get("mlflow_run_id")
    facts = {"checkpoint": str(source), "sha256": checkpoint_sha256(source), "mlflow_run_id": run_id}
    ctx.facts.update(ctx.folder.record_facts(baseline_source=facts))
    ctx.tracker.set_tags(ctx.search_run_id, ledger_view.baseline_source_tags(ctx.facts))


def run_baseline_stage(ctx) -> str:
    """Stage 0; returns its checkpoint (a URI when the search lives on an object store)."""
    from workers.checkpoint import checkpoint_sha256, load_checkpoint
    from workers.pruning import count_parameters, kept_channels
    from workers.training import evaluate

    started = now()
    ctx.view.stage_started(0, 0.0, 0)
    stage_run = publish.open_stage_run(ctx.tracker, ctx.experiment_id, ctx.name, 0, 0.0, ctx.search_run_id)
    checkpoint = _baseline_checkpoint(ctx, stage_run)
    model, _ = load_checkpoint(checkpoint)
    batch = ctx.cfg.search.finetune.batch_size
    val = float(evaluate(model, ctx.splits.val, ctx.splits.info, batch_size=batch))
    test = float(evaluate(model, ctx.splits.test, ctx.splits.info, batch_size=batch))
    params, kept = int(count_parameters(model)), kept_channels(model)
    del model
    latency = ctx.latency_of({"baseline": str(checkpoint)})["baseline"]
    ctx.facts.update(ctx.folder.record_facts(latency_protocol={x: latency.get(x) for x in LATENCY_PROTOCOL}))
    row = ledger.baseline_stage_row(ctx.name, metric_name=ctx.splits.info.metric, val=val, test=test,
                                    latency=latency, params=params, kept=kept, checkpoint=str(checkpoint),
                                    sha256=checkpoint_sha256(checkpoint), run_id=stage_run, started_at=started,
                                    ended_at=now())
    record_stage(ctx, row, checkpoint)
    trained = ctx.tracker.find_run(ctx.experiment_id, run_key(ctx.name, 0, "baseline"))
    register_stage(ctx, row, checkpoint, trained if isinstance(trained, str) else stage_run)
    if ctx.store is not None:  # trials on every node read the parent from the object store
        row = ledger.replace(row, checkpoint=ctx.store.push_checkpoint(checkpoint))
    ledger.write_stage(ctx.search_dir, row)
    ctx.mirror()
    ctx.view.stage_finished(0, row)
    return row.checkpoint


def check_rates_reachable(cfg, baseline: str | None = None) -> None:
    """Refuse (one line, before any trial) a configured rate the baseline's shape cannot reach.

    The shape is the recorded baseline's (`baseline`, once stage 0 ran), else the configured
    checkpoint's, else `model`'s.
    """
    from search_spaces.allocation import unreachable_rate
    from workers.checkpoint import read_meta

    source = baseline or (str(cfg.baseline.checkpoint) if cfg.baseline.checkpoint is not None else None)
    if source is not None and (source.startswith(("s3://", "gs://")) or (Path(source) / "model.json").exists()):
        spec = read_meta(source)["spec"]
        n_layers, channels = int(spec["n_layers"]), int(spec["d_model"])
    else:
        n_layers, channels = cfg.model.n_layers, cfg.model.d_model
    problem = unreachable_rate(cfg.search.rates, n_layers, channels, cfg.search.allocation.policy)
    if problem:
        from search_spaces.errors import ConfigError

        raise ConfigError(problem)
