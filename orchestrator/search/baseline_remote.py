"""The in-search baseline trained as a Ray task on a worker holding the trial resources.

`train_remote` runs `orchestrator.baseline.train_baseline` in a Ray task asking for `resources.cpu`
CPUs and `resources.gpu` GPUs (its device from `workers.device.assigned_device`, so a GPU share
trains on that GPU, or on the CPU with logical GPUs, S4OP_LOGICAL_GPUS=1), checkpointing each epoch
into the search's `baseline.train/`; a killed driver's resumed search continues from the last saved
epoch. While it runs, the driver reads the task's per-epoch record (`baseline.train/epochs.log`) and
hands each new epoch to `progress` (the search's console). Without a running Ray (never in a search) it trains in this process. `s4op train` does not
come here: it trains in its own process on `--device`. The task returns the checkpoint's files, which
the driver writes into the search folder when the task ran on another node; the per-epoch state
stays on the worker's disk there (a resume continues from it only when the task lands on that node
again, else from epoch 1).
"""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.search.interrupt import moment


def train_on_worker(cfg, out_dir: str, state_dir: str, *, tracking_uri, parent_run_id, run_key) -> dict:
    """The task body: device from Ray's assignment, threads from resources.cpu, then train_baseline;
    returns the checkpoint's files ({name: bytes}), for a driver on another node."""
    import torch

    from orchestrator.baseline import train_baseline
    from workers.device import assigned_device

    gpus = float(cfg.resources.gpu)
    device, label = assigned_device(gpus) if gpus > 0 else ("cpu", "cpu")
    torch.set_num_threads(max(1, int(float(cfg.resources.cpu))))
    checkpoint = train_baseline(cfg, out_dir, tracking_uri=tracking_uri, parent_run_id=parent_run_id,
                                run_key=run_key, device=device, train_device=label, state_dir=state_dir)
    return {name: (Path(checkpoint) / name).read_bytes() for name in _checkpoint_files()}


def _checkpoint_files() -> tuple[str, str]:
    from workers.checkpoint import META, WEIGHTS

    return WEIGHTS, META  # model.json last: a folder holding it is whole


def write_missing(out_dir: Path, files: dict) -> Path:
    """The checkpoint in `out_dir`, written from `files` when the task ran on another node (not here)."""
    weights, meta = _checkpoint_files()
    if not (out_dir / meta).is_file():
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in (weights, meta):
            tmp = out_dir / f".{name}.tmp"
            tmp.write_bytes(files[name])
            os.replace(tmp, out_dir / name)
    return out_dir


def train_remote(cfg, out_dir: Path, state_dir: Path, *, tracking_uri, parent_run_id, run_key,
                 progress=None) -> Path:
    """Train the baseline in a Ray task with the trial resources (see module docstring); its path.
    progress: called with each epoch's line of epochs.log (a dict) as the task writes it."""
    import ray

    kwargs = dict(tracking_uri=tracking_uri, parent_run_id=parent_run_id, run_key=run_key)
    if not ray.is_initialized():
        return write_missing(out_dir, train_on_worker(cfg, str(out_dir), str(state_dir), **kwargs))
    ref = submit(cfg, out_dir, state_dir, **kwargs)
    seen = len(epoch_lines(state_dir))
    moment("baseline")  # a test hook (S4OP_HOLD_AT): the driver waits here while the task trains
    while not ray.wait([ref], timeout=1.0)[0]:
        seen = _report(state_dir, seen, progress)
    _report(state_dir, seen, progress)
    return collect(ref, out_dir)


def submit(cfg, out_dir: Path, state_dir: Path, *, tracking_uri, parent_run_id, run_key):
    """Start the baseline's Ray task (trial resources); its ObjectRef, for `collect`."""
    import ray

    task = ray.remote(num_cpus=float(cfg.resources.cpu), num_gpus=float(cfg.resources.gpu),
                      max_retries=1)(train_on_worker)  # a lost worker's retry resumes from the last epoch
    return task.remote(cfg, str(out_dir), str(state_dir), tracking_uri=tracking_uri, parent_run_id=parent_run_id,
                       run_key=run_key)


def collect(ref, out_dir: Path) -> Path:
    """The checkpoint of a finished `submit` task, written into `out_dir`; its one-line errors re-raised."""
    import ray

    try:
        return write_missing(Path(out_dir), ray.get(ref))
    except ray.exceptions.RayTaskError as exc:  # our one-line errors come back as themselves
        from search_spaces.errors import S4opError

        if isinstance(exc.cause, S4opError):
            raise exc.cause from None
        raise


def epoch_lines(state_dir: Path) -> list[dict]:
    """The baseline's per-epoch record so far (`orchestrator.baseline.EPOCHS_LOG`), a torn last line left out."""
    import json

    from orchestrator.baseline import EPOCHS_LOG

    path = Path(state_dir) / EPOCHS_LOG
    lines = []
    for text in (path.read_text().splitlines() if path.is_file() else []):
        try:
            lines.append(json.loads(text))
        except ValueError:
            break
    return lines


def _report(state_dir: Path, seen: int, progress) -> int:
    lines = epoch_lines(state_dir)
    for line in lines[seen:] if progress is not None else []:
        progress(line)
    return len(lines)
