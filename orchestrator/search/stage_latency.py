"""Latency of a stage's models under the latency protocol, with exclusive use of the device.

Trials share cores, so figures taken inside them are wrong. After a stage's trials have finished,
one Ray task that reserves a whole node's CPUs (and one GPU when measuring on CUDA) loads each
trial's final checkpoint and times it with `workers.latency.measure_latency`: warm-up, >= 30 timed
runs, median and p90, fixed threads; device, threads, batch and length are recorded with the figure.
Without a running Ray (unit tests, stage 0 before Ray starts) the same function runs in-process.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np


def latency_examples(x: np.ndarray, lengths: np.ndarray, batch_sizes: list[int]) -> dict[int, tuple]:
    """(x, lengths) per batch size, cut (or tiled) from a split: x (n L) or (n L C), lengths (n,)."""
    from workers.data.ragged import pad_rows

    n = min(len(lengths), max(int(b) for b in batch_sizes))
    x, lengths = pad_rows(x, np.arange(n), int(x.shape[1])), np.asarray(lengths)[:n]  # only the rows used
    out = {}
    for batch in batch_sizes:
        reps = -(-int(batch) // len(x))
        xb = np.concatenate([x] * reps)[: int(batch)].copy()  # (B L ...)
        lb = np.concatenate([lengths] * reps)[: int(batch)].copy()  # (B,)
        out[int(batch)] = (xb, lb)
    return out


def measure_models(models: Mapping[str, str], examples: Mapping[int, tuple], latency: Mapping) -> dict:
    """{id: {batch: measure_latency dict}} for each checkpoint folder in `models` (runs here).

    The models of a stage are timed interleaved (each round runs every model once), so a drift of
    the machine during the measurement does not favour whichever model ran first.
    """
    import torch

    from workers.checkpoint import load_checkpoint
    from workers.latency import measure_latency_interleaved

    device = str(latency.get("device", "cpu"))
    threads = int(latency.get("threads", 1))
    keys = list(models)
    loaded = [load_checkpoint(models[key])[0].eval() for key in keys]
    out: dict = {key: {} for key in keys}
    for batch, (x, lengths) in examples.items():
        example = (torch.as_tensor(x), torch.as_tensor(lengths))  # x (B L) tokens or (B L C); lengths (B,)
        figures = measure_latency_interleaved([(m, example) for m in loaded], repeats=int(latency.get("repeats", 30)),
                                              warmup=int(latency.get("warmup", 5)), threads=threads, device=device)
        for key, fig in zip(keys, figures):
            out[key][int(batch)] = dict(fig)
    return out


def whole_node_cpus() -> int:
    """CPUs of the largest alive node of the running Ray cluster (what 'exclusive' reserves)."""
    import ray

    cpus = [int(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
    return max(cpus) if cpus and max(cpus) > 0 else 1


def measure_stage(models: Mapping[str, str], examples: Mapping[int, tuple], latency: Mapping, *,
                  in_process: bool = False) -> dict:
    """Like `measure_models`, inside a Ray task holding a whole node (and a GPU on CUDA) if Ray runs.

    in_process: measure in this process instead (the embedded single-node case: the stage's trials
    have finished, so the driver already has the machine to itself and skips a worker start).
    """
    if not models:
        return {}
    try:
        import ray
    except ImportError:  # pragma: no cover
        return measure_models(models, examples, latency)
    if not ray.is_initialized() or in_process:
        return measure_models(models, examples, latency)
    gpus = 1 if str(latency.get("device", "cpu")).startswith("cuda") else 0
    task = ray.remote(num_cpus=whole_node_cpus(), num_gpus=gpus, max_retries=2)(measure_models)
    return ray.get(task.remote(dict(models), dict(examples), dict(latency)))
