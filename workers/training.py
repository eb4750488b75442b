"""The training loop shared by baseline training and each trial's fine-tuning.

`fit` trains with AdamW (the SSM parameters in their own groups, `build_optimizer`), a per-step
learning-rate schedule of linear warm-up then cosine decay to 0, optional gradient clipping, and
early stopping on the validation metric; the best-validation weights are restored at the end.
`evaluate` computes the task's metric (accuracy, or macro-F1 at threshold 0.5 for multi-label).

Determinism and resuming. Epoch e (1-based) draws its batch order and its dropout masks from
generators seeded with (seed, e) only, inside `torch.random.fork_rng`, so the caller's global RNG
is untouched and epoch e is a pure function of (weights, optimiser state, seed, e). `TrainState`
(weights, best weights, optimiser moments, step, epoch, early-stopping counters, history) is
therefore all a restarted trial needs: `fit(..., state=TrainState.load(folder))` after epoch k
continues exactly as the uninterrupted run. It is saved as safetensors + JSON, never pickled.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from search_spaces.errors import CheckpointError, DataError, TrainingError
from workers.batches import eval_batches, n_examples, n_train_batches, train_batches
from workers.metrics import metric_from_logits

STATE_TENSORS = "train_state.safetensors"
STATE_JSON = "train_state.json"
STATE_FORMAT = 1


# ----------------------------------------------------------------------------- schedule
def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Multiplier of the base lr for optimiser step `step` (0-based): linear warm-up over
    `warmup_steps` steps ((step + 1) / warmup), then cosine from 1 to 0 over the rest."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / decay_steps, 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch `epoch` (1-based) of a run with seed `seed` (a fixed 63-bit mix)."""
    digest = hashlib.sha256(f"s4op-epoch:{int(seed)}:{int(epoch)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


# ----------------------------------------------------------------------------- reports
@dataclass
class EpochReport:
    """What `on_epoch` receives after each epoch. `epoch` is 1-based (= epochs completed);
    `state` is the resumable state at this point (valid during the callback; `state.save(dir)`)."""

    epoch: int
    train_loss: float
    val_metric: float
    best_val_metric: float
    elapsed_s: float
    eta_s: float
    improved: bool
    lr: float = 0.0
    state: "TrainState | None" = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """The report as plain data (without `state`)."""
        return {k: getattr(self, k) for k in _REPORT_KEYS}


_REPORT_KEYS = ("epoch", "train_loss", "val_metric", "best_val_metric", "elapsed_s", "eta_s", "improved", "lr")


@dataclass
class TrainState:
    """Everything needed to continue a `fit` after `epoch` completed epochs.

    model / best_model: state dicts (current and best-validation weights); optimizer: the AdamW
    state dict (per-group base lr in `initial_lr`); step: optimiser steps taken; history: one
    `EpochReport.as_dict()` per epoch.
    """

    epoch: int
    step: int
    seed: int
    best_val_metric: float
    best_epoch: int
    epochs_since_best: int
    model: dict[str, torch.Tensor]
    best_model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    scaler: dict[str, Any] = field(default_factory=dict)  # the fp16 GradScaler's state; {} otherwise

    def save(self, folder: str | os.PathLike) -> Path:
        """Write `train_state.safetensors` + `train_state.json` into `folder` (atomically each)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        for name, value in self.model.items():
            tensors[f"model/{name}"] = _plain(value)
        for name, value in self.best_model.items():
            tensors[f"best/{name}"] = _plain(value)
        opt_state: dict[str, dict[str, Any]] = {}
        for pid, entry in self.optimizer.get("state", {}).items():
            plain: dict[str, Any] = {}
            for key, value in entry.items():
                if torch.is_tensor(value):
                    tensors[f"optim/{pid}/{key}"] = _plain(value)
                    plain[key] = {"tensor": f"optim/{pid}/{key}"}
                else:
                    plain[key] = value
            opt_state[str(pid)] = plain
        meta = {
            "format": STATE_FORMAT,
            "epoch": self.epoch,
            "step": self.step,
            "seed": self.seed,
            "best_val_metric": _json_float(self.best_val_metric),
            "best_epoch": self.best_epoch,
            "epochs_since_best": self.epochs_since_best,
            "model_keys": list(self.model),
            "best_keys": list(self.best_model),
            "optimizer": {"state": opt_state, "param_groups": self.optimizer.get("param_groups", [])},
            "history": self.history,
            "scaler": self.scaler,
        }
        tmp = folder / f".{STATE_TENSORS}.tmp"
        save_file(tensors, str(tmp))
        meta["tensors_sha256"] = _sha256(tmp)
        os.replace(tmp, folder / STATE_TENSORS)
        tmp_json = folder / f".{STATE_JSON}.tmp"
        tmp_json.write_text(json.dumps(meta, indent=1))
        os.replace(tmp_json, folder / STATE_JSON)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "TrainState":
        """Read a state written by `save`; a missing, altered or foreign file -> CheckpointError."""
        folder = Path(folder)
        meta_path, tensor_path = folder / STATE_JSON, folder / STATE_TENSORS
        for path in (meta_path, tensor_path):
            if not path.is_file():
                raise CheckpointError(f"training state file {path} is missing")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"training state file {meta_path} is not valid JSON ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
            raise CheckpointError(f"training state file {meta_path}: expected format {STATE_FORMAT}")
        if _sha256(tensor_path) != meta.get("tensors_sha256"):
            raise CheckpointError(f"training state file {tensor_path} does not match the sha256 in {meta_path}")
        try:
            tensors = load_file(str(tensor_path))
            opt = meta["optimizer"]
            state = {}
            for pid, entry in opt["state"].items():
                state[int(pid)] = {
                    k: (tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v) for k, v in entry.items()
                }
            return cls(
                epoch=int(meta["epoch"]),
                step=int(meta["step"]),
                seed=int(meta["seed"]),
                best_val_metric=float(meta["best_val_metric"]),
                best_epoch=int(meta["best_epoch"]),
                epochs_since_best=int(meta["epochs_since_best"]),
                model={k: tensors[f"model/{k}"] for k in meta["model_keys"]},
                best_model={k: tensors[f"best/{k}"] for k in meta["best_keys"]},
                optimizer={"state": state, "param_groups": opt["param_groups"]},
                history=list(meta["history"]),
                scaler=dict(meta.get("scaler") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"training state in {folder} is incomplete ({exc!r})") from None


@dataclass
class FitResult:
    """best_val_metric / best_epoch: of the restored weights; epochs_run: epochs completed in
    total (including those before a resume); stopped_early: patience ran out; history: one
    EpochReport per epoch of the whole run; state: the state after the last epoch (before the
    best weights were restored), from which a longer run could continue."""

    best_val_metric: float
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    elapsed_s: float
    history: list[EpochReport]
    state: TrainState


# ----------------------------------------------------------------------------- loss / eval
def compute_loss(logits: torch.Tensor, y: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Cross-entropy over classes, or BCE-with-logits over labels for multi-label tasks."""
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype))  # logits, y: (B c)
    return F.cross_entropy(logits, y)  # logits: (B d_output), y: (B,)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, split, *, batch_size: int) -> np.ndarray:
    """The model's logits for every row of `split`, in row order: (n d_output). Eval mode."""
    device = _model_device(model)
    was_training = model.training
    model.eval()
    try:
        out: np.ndarray | None = None
        for batch in eval_batches(split, batch_size, d_input=token_range(model)):
            batch = batch.to(device)
            logits = model(batch.x, batch.lengths).float().cpu().numpy()  # (B d_output)
            if out is None:
                out = np.zeros((n_examples(split), logits.shape[-1]), dtype=np.float32)
            out[batch.index] = logits
    finally:
        model.train(was_training)
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def evaluate(model: torch.nn.Module, split, info, *, batch_size: int = 64) -> float:
    """The task metric of `model` on `split`: accuracy, or macro-F1 (logit > 0) if info.multilabel."""
    if n_examples(split) == 0:
        raise DataError(f"cannot evaluate on an empty split of task {getattr(info, 'name', '?')}")
    logits = predict_logits(model, split, batch_size=batch_size)  # (n d_output)
    return metric_from_logits(logits, np.asarray(split.y), multilabel=bool(info.multilabel))


# ----------------------------------------------------------------------------- fit
def fit(
    model: torch.nn.Module,
    splits,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    patience: int | None,
    grad_clip: float | None = None,
    warmup_epochs: float = 0,
    seed: int = 0,
    on_epoch: Callable[[EpochReport], Any] | None = None,
    start_epoch: int = 0,
    state: TrainState | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
) -> FitResult:
    """Train `model` on splits.train, early-stop on splits.val, restore the best weights.

    epochs: total epochs of the run (the cosine schedule spans all of them); patience: stop after
    this many epochs without a strictly better val metric (None or <= 0: never stop early);
    warmup_epochs: linear warm-up length in epochs (may be fractional); start_epoch: epochs already
    done (the schedule and the seeds continue from there; weights as given); state: a TrainState
    to resume from (weights, optimiser, counters; overrides start_epoch); device: where to train
    (batches go there from pinned memory, non-blocking); precision: fp32 | bf16 | fp16 for the
    training forward (`workers.precision`; validation runs in fp32). Returns a FitResult;
    the model is left in eval mode holding its best-validation weights.

    On CUDA the loss is read back once per epoch, not per step: a non-finite loss is then reported
    (with its epoch and step) when its epoch ends, not at once as on the CPU.
    """
    from workers.optim import build_optimizer
    from workers.precision import autocast, grad_scaler

    info = splits.info
    multilabel = bool(info.multilabel)
    if n_examples(splits.train) == 0:
        raise DataError(f"the training split of task {info.name} is empty")
    if n_examples(splits.val) == 0:
        raise DataError(f"the validation split of task {info.name} is empty (check val_fraction)")
    if batch_size < 1 or epochs < 0:
        raise ValueError(f"fit: batch_size {batch_size} and epochs {epochs} must be >= 1 and >= 0")

    model.to(device)
    optimizer = build_optimizer(model, lr, weight_decay)
    scaler = grad_scaler(device, precision)
    deferred = torch.device(device).type != "cpu"  # no host-device sync per step
    tokens = token_range(model)
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    steps_per_epoch = n_train_batches(splits.train, batch_size)
    total_steps = steps_per_epoch * epochs
    warmup_steps = int(round(warmup_epochs * steps_per_epoch))

    history: list[EpochReport] = []
    if state is not None:
        if state.seed != seed:
            raise CheckpointError(f"training state was saved with seed {state.seed}, resumed with seed {seed}")
        try:
            model.load_state_dict(state.model)
            optimizer.load_state_dict(state.optimizer)
            if state.scaler:
                scaler.load_state_dict(state.scaler)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"training state (epoch {state.epoch}) does not fit this model: "
                                  f"{' '.join(str(exc).split())[:200]}") from None
        epoch, step = state.epoch, state.step
        best_val, best_epoch, since_best = state.best_val_metric, state.best_epoch, state.epochs_since_best
        best_model = {k: v.detach().clone() for k, v in state.best_model.items()}
        history = [EpochReport(**{k: h[k] for k in _REPORT_KEYS if k in h}) for h in state.history]
    else:
        epoch, step = int(start_epoch), int(start_epoch) * steps_per_epoch
        best_val, best_epoch, since_best = -math.inf, 0, 0
        best_model = _snapshot(model)

    stopped_early = bool(patience) and patience > 0 and since_best >= patience and epoch > 0
    started = time.perf_counter()
    run_epochs = 0
    while epoch < epochs and not stopped_early:
        t0 = time.perf_counter()
        epoch += 1
        with torch.random.fork_rng(devices=_rng_devices(device)):
            torch.manual_seed(epoch_seed(seed, epoch))
            generator = torch.Generator().manual_seed(epoch_seed(seed, epoch) ^ 0x5EED)
            model.train()
            losses: list[torch.Tensor] = []  # per step, on the device
            steps: list[tuple[int, int, float]] = []  # per step: (rows, step, lr)
            for batch in train_batches(splits.train, batch_size, generator, d_input=tokens):
                batch = batch.to(device)
                factor = lr_factor(step, total_steps, warmup_steps)
                for group in optimizer.param_groups:
                    group["lr"] = group["initial_lr"] * factor
                with autocast(device, precision):
                    logits = model(batch.x, batch.lengths)  # (B d_output)
                loss = compute_loss(logits.float(), batch.y, multilabel)
                losses.append(loss.detach())
                steps.append((int(batch.lengths.shape[0]), step, optimizer.param_groups[0]["lr"]))
                if not deferred:
                    _check_finite(losses[-1:], steps[-1:], epoch)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                scaler.step(optimizer)
                scaler.update()
                step += 1
            values = _check_finite(losses, steps, epoch)
            loss_sum, seen = 0.0, 0
            for value, (rows, _, _) in zip(values, steps):
                loss_sum += value * rows
                seen += rows
        val = evaluate(model, splits.val, info, batch_size=batch_size)
        improved = val > best_val
        if improved:
            best_val, best_epoch, since_best = val, epoch, 0
            best_model = _snapshot(model)
        else:
            since_best += 1
        run_epochs += 1
        elapsed = time.perf_counter() - started
        report = EpochReport(
            epoch=epoch,
            train_loss=loss_sum / max(seen, 1),
            val_metric=val,
            best_val_metric=best_val,
            elapsed_s=time.perf_counter() - t0 + (history[-1].elapsed_s if history else 0.0),
            eta_s=elapsed / run_epochs * (epochs - epoch),
            improved=improved,
            lr=optimizer.param_groups[0]["lr"],
        )
        history.append(report)
        stopped_early = bool(patience) and patience > 0 and since_best >= patience
        if on_epoch is not None:
            report.state = _state(epoch, step, seed, best_val, best_epoch, since_best, model, best_model, optimizer,
                                  history, scaler)
            on_epoch(report)
            report.state = None

    final = _state(epoch, step, seed, best_val, best_epoch, since_best, model, best_model, optimizer, history, scaler)
    if best_epoch > 0:
        model.load_state_dict(best_model)
    model.eval()
    return FitResult(
        best_val_metric=best_val,
        best_epoch=best_epoch,
        epochs_run=epoch,
        stopped_early=stopped_early and epoch < epochs,
        elapsed_s=time.perf_counter() - started,
        history=history,
        state=final,
    )


# ----------------------------------------------------------------------------- helpers
def _check_finite(losses: list[torch.Tensor], steps: list[tuple[int, int, float]], epoch: int) -> list[float]:
    """The losses as floats (one read-back); the first non-finite one -> TrainingError naming its step."""
    values = torch.stack(losses).tolist() if losses else []
    for value, (_, step, lr) in zip(values, steps):
        if not math.isfinite(value):
            raise TrainingError(f"training diverged: loss={value} at epoch {epoch} step {step}"
                                f" (lr={lr:.3g}); lower the learning rate")
    return values


def token_range(model: torch.nn.Module) -> int | None:
    """The vocabulary size d_input of a token model (batches are checked against it), else None."""
    spec = getattr(model, "spec", None)
    return int(spec.d_input) if spec is not None and spec.input_kind == "tokens" else None


def _state(epoch, step, seed, best_val, best_epoch, since_best, model, best_model, optimizer, history,
           scaler=None) -> TrainState:
    return TrainState(
        epoch=epoch,
        step=step,
        seed=seed,
        best_val_metric=best_val,
        best_epoch=best_epoch,
        epochs_since_best=since_best,
        model=_snapshot(model),
        best_model=best_model,
        optimizer=copy.deepcopy(optimizer.state_dict()),
        history=[h.as_dict() for h in history],
        scaler=dict(scaler.state_dict()) if scaler is not None else {},
    )


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _plain(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous().clone()


def _json_float(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _rng_devices(device) -> list:
    d = torch.device(device)
    if d.type == "cuda":
        return [d.index if d.index is not None else torch.cuda.current_device()]
    return []
