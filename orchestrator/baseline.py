"""Train the dense baseline of a config: data -> S4Model -> fit -> checkpoint, tracked in MLflow.

`train_baseline(cfg, out_dir)` generates the task's data first when `task.data_dir` is missing (or
empty) and the config says how (`task.generate`), loads the splits, builds the model from
`cfg.model`, trains it with `cfg.baseline.train` (`workers.training.fit`), prints one progress line
per epoch, and writes the best-validation checkpoint (model.safetensors + model.json with val/test
metrics, the data fingerprint and the task) into `out_dir`. The run is logged to MLflow: params
(the flattened config), per-epoch metrics (step = epoch), the data fingerprint tag and the
checkpoint files as artifacts. Without a tracking URI the store is `sqlite:///<out_dir>/mlflow.db`
(absolute), with artifacts in `<out_dir>/mlartifacts`.

Resuming: with `state_dir` (a search's `baseline.train/`), the training state (`TrainState`) is
saved there after every epoch (as `epoch-<k>/`, renamed in whole) and one line per epoch appended to its `epochs.log` (epoch, pid, the
epoch this start resumed from); a later call with the same `state_dir` continues from the last saved
epoch instead of epoch 1. `train_device` (the ledger's label, e.g. `cuda:0 (NVIDIA H100)`) goes into
model.json's extra and the run's `s4op.train_device` tag.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any



def prepare_data(cfg) -> tuple[Any, str]:
    """Generate the data if missing and the config says how; return (splits, data fingerprint).
    A URI `task.data_dir` is fetched into this node's data cache (`workers.data.node_cache`), never generated."""
    from workers.data import fingerprint, load_task

    data_dir, data_fp = local_data(cfg)
    splits = load_task(cfg.task.name, data_dir, max_len=cfg.task.max_len, val_fraction=cfg.task.val_fraction,
                       loader=cfg.task.loader, metric=cfg.task.metric)
    data_fp = data_fp or fingerprint(data_dir, cached=True)  # this node's stat cache: bytes read once
    say_truncation_once(splits, data_fp)
    return splits, data_fp


def generate_missing(cfg) -> Path:
    """`task.data_dir` on this node: generated first when it is missing or empty and the config says how
    (a URI: its copy in this node's data cache)."""
    return local_data(cfg)[0]


def local_data(cfg) -> tuple[Path, str | None]:
    """(this node's data folder, its fingerprint when already known: a URI's cached copy), generating a
    missing local folder first when the config says how."""
    from workers.data import generate_task
    from workers.data.node_cache import node_data
    from workers.objectstore import is_uri

    if is_uri(str(cfg.task.data_dir)):
        found = node_data(str(cfg.task.data_dir))
        data_dir, data_fp = found.path, found.fingerprint
    else:
        data_dir, data_fp = Path(cfg.task.data_dir), None
    gen = cfg.task.generate
    if data_fp is None and gen is not None and not (data_dir.is_dir() and any(data_dir.iterdir())):
        generate_task(cfg.task.name, data_dir, size={"train": gen.train, "val": gen.val, "test": gen.test},
                      seed=gen.seed, options=dict(gen.options))
    return data_dir, data_fp


_TRUNCATION_SAID: set[tuple[str, int]] = set()  # (data fingerprint, L) already reported in this process


def say_truncation_once(splits, data_fp: str) -> None:
    """Print, once per process and data/L, one line per split that `task.max_len` truncates."""
    from workers.data.tasks import truncation_notes

    key = (data_fp, int(splits.train.x.shape[1]))
    if key in _TRUNCATION_SAID:
        return
    _TRUNCATION_SAID.add(key)
    for note in truncation_notes(splits):
        print(note, flush=True)


def build_model(cfg, info):
    """The dense S4Model of `cfg.model` for a task (vocabulary/channels in, classes/labels out)."""
    import torch

    from workers.models import ModelSpec, S4Model

    spec = ModelSpec.from_dict(cfg.model.to_spec_dict(info.d_input, info.n_classes, info.input_kind))
    torch.manual_seed(cfg.baseline.train.seed)
    return S4Model(spec)


def train_baseline(cfg, out_dir: str | os.PathLike, *, tracking_uri: str | None = None, console=None,
                   parent_run_id: str | None = None, run_key: str | None = None, device: str = "cpu",
                   state_dir: str | os.PathLike | None = None, train_device: str | None = None) -> Path:
    """Train `cfg`'s dense baseline into `out_dir` (the checkpoint folder); returns its path.

    tracking_uri: MLflow store (default: absolute sqlite file in out_dir); parent_run_id: tag the
    run as a child (it is then created in the parent's experiment, else in `s4op-train`); run_key:
    the run's `s4op.key` inside a search (found-or-created, so a resumed search reuses the run);
    console: a rich Console for progress (default: stdout); state_dir / train_device: see the module
    docstring.
    """
    from rich.console import Console

    from workers.checkpoint import save_checkpoint
    from workers.metrics import MAJORITY_BASELINE, majority_baseline
    from workers.training import evaluate, fit

    console = console or Console(highlight=False, soft_wrap=True)
    out_dir = Path(out_dir).resolve()
    train = cfg.baseline.train

    t0 = time.perf_counter()
    splits, data_fp = prepare_data(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = splits.info
    data_s = time.perf_counter() - t0
    majority = majority_baseline(splits.train.y, splits.val.y, multilabel=bool(info.multilabel))
    model = build_model(cfg, info)
    n_params = sum(p.numel() for p in model.parameters())
    console.print(f"[bold]{cfg.name}[/]: {cfg.model.kind} H={cfg.model.d_model} layers={cfg.model.n_layers} "
                  f"N={cfg.model.d_state} ({n_params:,} params) on {info.name} "
                  f"(train {len(splits.train.y)}, val {len(splits.val.y)}, test {len(splits.test.y)}; "
                  f"majority val {info.metric} {majority:.3f}; data {data_s:.1f}s)")
    console.print(f"majority = {MAJORITY_BASELINE}")

    from orchestrator.tracking.baseline_run import BaselineRun

    from orchestrator.tracking import ledger_view as view

    in_search = run_key is not None  # the search run holds the config; this run only what is its own
    tracker = BaselineRun(tracking_uri, out_dir, parent_run_id,
                          name=view.BASELINE_RUN_NAME if in_search else f"{cfg.name}-baseline", key=run_key)
    config = cfg.model_dump(mode="json")
    train_device = train_device or device
    tracker.start(params=view.flatten({"baseline": config["baseline"]} if in_search else config),
                  tags={**view.kind_tags("baseline"), "s4op.config": cfg.name, "s4op.task": info.name,
                        "s4op.data_fingerprint": data_fp, "s4op.train_device": train_device})
    state_dir = Path(state_dir).resolve() if state_dir is not None else None
    state = last_epoch_state(state_dir) if state_dir is not None else None
    if state is not None:
        console.print(f"resuming the baseline after epoch {state.epoch} ({state_dir})")
    last_elapsed = [float(state.history[-1]["elapsed_s"]) if state is not None and state.history else 0.0]
    status = "FAILED"
    try:
        def on_epoch(r) -> None:
            mark = "*" if r.improved else " "
            console.print(f"epoch {r.epoch:3d}/{train.epochs}  loss {r.train_loss:.4f}  "
                          f"val {info.metric} {r.val_metric:.4f}{mark} (best {r.best_val_metric:.4f})  "
                          f"lr {r.lr:.2e}  {r.elapsed_s:6.1f}s  ETA {r.eta_s:5.0f}s")
            seconds, last_elapsed[0] = r.elapsed_s - last_elapsed[0], r.elapsed_s  # per epoch, not cumulative
            if state_dir is not None:  # saved before the metrics: a kill between them loses a point, never repeats one
                save_epoch_state(state_dir, r, resumed_from=state.epoch if state is not None else 0,
                                 train_device=train_device)
            tracker.metrics(view.epoch_metrics({"loss": r.train_loss, "val_metric": r.val_metric, "seconds": seconds},
                                               info.metric), step=r.epoch)

        result = fit(model, splits, epochs=train.epochs, lr=train.lr, weight_decay=train.weight_decay,
                     batch_size=train.batch_size, patience=train.patience, grad_clip=train.grad_clip,
                     warmup_epochs=train.warmup_epochs, seed=train.seed, on_epoch=on_epoch, device=device,
                     precision=train.precision, state=state)
        val = evaluate(model, splits.val, info, batch_size=train.batch_size)
        test = evaluate(model, splits.test, info, batch_size=train.batch_size)
        model.cpu()
        metrics = {"metric": info.metric, "val_metric": val, "test_metric": test, "majority_val": majority,
                   "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                   "train_time_s": result.elapsed_s}
        checkpoint = save_checkpoint(model, out_dir, task=info.name, data_fingerprint=data_fp, metrics=metrics,
                                     extra={"config": cfg.name, "train": train.model_dump(mode="json"),
                                            "history": [h.as_dict() for h in result.history],
                                            "mlflow_run_id": tracker.run_id, "train_device": train_device})
        # the final model (best-validation weights) one step past its last epoch, as a trial's figures
        tracker.metrics({view.val_key(info.metric): val, view.test_key(info.metric): test, "n_params": n_params,
                         "best_epoch": result.best_epoch}, step=view.final_step(result.epochs_run))
        tracker.artifacts(checkpoint)
        status = "FINISHED"
    finally:
        tracker.end(status)
    stop = " (early stop)" if result.stopped_early else ""
    console.print(f"[bold]done[/]: val {info.metric} {val:.4f} (majority {majority:.4f}), test {test:.4f}, "
                  f"best epoch {result.best_epoch}/{result.epochs_run}{stop}, {result.elapsed_s:.1f}s")
    console.print(f"checkpoint: {checkpoint}")
    return Path(checkpoint)


EPOCHS_LOG = "epochs.log"


def save_epoch_state(state_dir: Path, report, *, resumed_from: int, train_device: str) -> None:
    """Save epoch `report.epoch`'s TrainState as `state_dir/epoch-<k>/` and append its line to epochs.log.

    The state is written into `.saving/` and renamed whole (a kill mid-save leaves the previous epoch's
    state intact), then the older epochs' folders are removed."""
    import json
    import shutil

    state_dir.mkdir(parents=True, exist_ok=True)
    saving = state_dir / ".saving"
    shutil.rmtree(saving, ignore_errors=True)
    report.state.save(saving)
    target = state_dir / f"epoch-{int(report.epoch):05d}"
    shutil.rmtree(target, ignore_errors=True)
    os.replace(saving, target)
    for old in state_dir.glob("epoch-*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    line = {"epoch": int(report.epoch), "pid": os.getpid(), "resumed_from": int(resumed_from),
            "train_device": train_device, "val_metric": float(report.val_metric), "at": time.time()}
    with open(state_dir / EPOCHS_LOG, "a") as f:
        f.write(json.dumps(line) + "\n")


def last_epoch_state(state_dir: Path):
    """The TrainState of the last epoch saved by `save_epoch_state` in `state_dir`, or None."""
    from workers.training import TrainState

    folders = sorted(p for p in state_dir.glob("epoch-*") if p.is_dir()) if state_dir.is_dir() else []
    return TrainState.load(folders[-1]) if folders else None
