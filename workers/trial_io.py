"""What a trial reads and writes besides its model: Tune checkpoints, starts.log, the stage's data.

Helpers of `workers/trial.py` (the Tune adapter), kept apart so the adapter reads as the trial's
steps. A per-epoch Tune checkpoint holds `model/` and `train_state/` (safetensors + JSON each) and
`epoch.json`; the final one holds `final.json` (the final result, reported again if Tune restarts a
trial that had finished).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

FINAL_MARKER = "final.json"
_SPLITS: dict = {}  # {(task, data_dir, max_len, val_fraction, fingerprint): TaskSplits}, the last one loaded


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def process_started() -> float:
    """Wall-clock time this worker process started (for the per-trial timing breakdown)."""
    try:
        import psutil

        return float(psutil.Process().create_time())
    except Exception:  # noqa: BLE001 - timings are informative only
        return float("nan")


def injected_fault(stage: int, name: str, where: str = "") -> None:
    """Fault-injection hook for tests: S4OP_FAIL_TRIALS="<stage>/<trial>,..." makes those trials raise;
    "<stage>/<trial>:enospc" makes it raise the OSError of a full disk writing into `where`."""
    wanted = {x.strip() for x in os.environ.get("S4OP_FAIL_TRIALS", "").split(",") if x.strip()}
    if f"{stage}/{name}:enospc" in wanted:
        raise OSError(errno.ENOSPC, "No space left on device", where)
    if f"{stage}/{name}" in wanted:
        raise RuntimeError(f"injected fault in stage {stage} trial {name} (S4OP_FAIL_TRIALS)")


def record_start(stage_dir: str, name: str, seed: int, resumed: bool, epoch) -> None:
    """One JSON line per trial start in `<stage>/starts.log` (from_epoch: epochs already done,
    or "final" when Tune restarted a trial whose final result was already saved), with the node it
    started on (node_id, node_ip, hostname): a trial that fails before its first report is placed by it."""
    from workers.node_identity import this_node

    Path(stage_dir).mkdir(parents=True, exist_ok=True)
    line = json.dumps({"trial": name, "seed": seed, "resumed": resumed, "from_epoch": epoch,
                       "pid": os.getpid(), "at": now(), **this_node()})
    with open(Path(stage_dir) / "starts.log", "a") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


@dataclass
class Restored:
    """What a trial's last Tune checkpoint holds: its final result, or the model after `epoch` epochs."""

    final: dict | None = None
    model: object = None
    state: object = None
    epoch: int = 0
    started_at: str | None = None

    @property
    def from_epoch(self):
        return "final" if self.final is not None else self.epoch


def restore(checkpoint) -> Restored:
    from workers.checkpoint import load_checkpoint
    from workers.training import TrainState

    with checkpoint.as_directory() as folder:
        folder = Path(folder)
        if (folder / FINAL_MARKER).exists():
            return Restored(final=json.loads((folder / FINAL_MARKER).read_text()))
        info = json.loads((folder / "epoch.json").read_text())
        model, _ = load_checkpoint(folder / "model")
        state = TrainState.load(folder / "train_state") if (folder / "train_state").exists() else None
        return Restored(model=model, state=state, epoch=int(info["epoch"]), started_at=info.get("started_at"))


@contextmanager
def _checkpoint_folder(fill):
    """A temporary folder filled by `fill` (Tune copies it when it is reported), removed after."""
    folder = Path(tempfile.mkdtemp(prefix="s4op-ckpt-"))
    try:
        fill(folder)
        yield str(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def epoch_checkpoint(model, state, epoch: int, extra: dict):
    """A checkpoint folder with the model and the train state after `epoch` epochs."""
    from workers.checkpoint import save_checkpoint

    def fill(folder: Path) -> None:
        save_checkpoint(model, folder / "model", extra=extra)
        if state is not None:
            state.save(folder / "train_state")
        (folder / "epoch.json").write_text(json.dumps({"epoch": epoch, **extra}))

    return _checkpoint_folder(fill)


def final_checkpoint(final: dict):
    return _checkpoint_folder(lambda folder: (folder / FINAL_MARKER).write_text(json.dumps(final)))


def task_splits(ctx):
    """The stage's data, loaded once per worker process: a reused worker (Tune `reuse_actors`)
    runs the stage's next trial on the same splits without reading and parsing the files again.
    Batching copies rows out of the arrays (never writes to them), so sharing them is safe."""
    from workers.data import load_task
    from workers.data.node_cache import readable_data_dir

    key = (ctx.task, ctx.data_dir, ctx.max_len, ctx.val_fraction, ctx.data_fingerprint)
    if key not in _SPLITS:
        _SPLITS.clear()
        data_dir = readable_data_dir(ctx.data_dir, ctx.data_fingerprint)  # a URI: this node's cached copy
        _SPLITS[key] = load_task(ctx.task, data_dir, max_len=ctx.max_len, val_fraction=ctx.val_fraction,
                                 loader=ctx.loader, metric=ctx.metric)
    return _SPLITS[key]


def model_dir(ctx, name: str):
    """Where the trial's final model goes: `<trials_dir>/<name>/model` (a path or a URI)."""
    if "://" in ctx.trials_dir:
        from workers.objectstore import join_uri

        return join_uri(ctx.trials_dir, name, "model")
    return Path(ctx.trials_dir) / name / "model"
