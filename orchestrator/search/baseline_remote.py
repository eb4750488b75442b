"""The in-search baseline trained as a Ray task on a worker holding the trial resources.

`train_remote` runs `orchestrator.baseline.train_baseline` in a Ray task asking for `resources.cpu`
CPUs and `resources.gpu` GPUs (its device from `workers.device.assigned_device`, so a GPU share
trains on that GPU, or on the CPU with logical GPUs, S4OP_LOGICAL_GPUS=1), checkpointing each epoch
into the search's `baseline.train/`; a killed driver's resumed search continues from the last saved
epoch. Without a running Ray (never in a search) it trains in this process. `s4op train` does not
come here: it trains in its own process on `--device`.
"""

from __future__ import annotations

from pathlib import Path


def train_on_worker(cfg, out_dir: str, state_dir: str, *, tracking_uri, parent_run_id, run_key) -> str:
    """The task body: device from Ray's assignment, threads from resources.cpu, then train_baseline."""
    import torch

    from orchestrator.baseline import train_baseline
    from workers.device import assigned_device

    gpus = float(cfg.resources.gpu)
    device, label = assigned_device(gpus) if gpus > 0 else ("cpu", "cpu")
    torch.set_num_threads(max(1, int(float(cfg.resources.cpu))))
    return str(train_baseline(cfg, out_dir, tracking_uri=tracking_uri, parent_run_id=parent_run_id, run_key=run_key,
                              device=device, train_device=label, state_dir=state_dir))


def train_remote(cfg, out_dir: Path, state_dir: Path, *, tracking_uri, parent_run_id, run_key) -> Path:
    """Train the baseline in a Ray task with the trial resources (see module docstring); its path."""
    import ray

    kwargs = dict(tracking_uri=tracking_uri, parent_run_id=parent_run_id, run_key=run_key)
    if not ray.is_initialized():
        return Path(train_on_worker(cfg, str(out_dir), str(state_dir), **kwargs))
    task = ray.remote(num_cpus=float(cfg.resources.cpu), num_gpus=float(cfg.resources.gpu),
                      max_retries=1)(train_on_worker)  # a lost worker's retry resumes from the last epoch
    try:
        return Path(ray.get(task.remote(cfg, str(out_dir), str(state_dir), **kwargs)))
    except ray.exceptions.RayTaskError as exc:  # our one-line errors come back as themselves
        from search_spaces.errors import S4opError

        if isinstance(exc.cause, S4opError):
            raise exc.cause from None
        raise
