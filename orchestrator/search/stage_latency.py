"""Latency of a stage's models under the latency protocol, with exclusive use of the device.

Trials share cores, so figures taken inside them are wrong. After a stage's trials have finished,
one Ray task that reserves a whole node's CPUs (and one GPU when measuring on CUDA) loads each
trial's final checkpoint and times it with `workers.latency.measure_latency`: warm-up, >= 30 timed
runs, median and p90, fixed threads; device, threads, batch and length are recorded with the figure.
Without a running Ray (unit tests, stage 0 before Ray starts) the same function runs in-process.

The runtime (PyTorch eager or ONNX Runtime) and mode (sequence, or per streaming step as well) are
`workers.runtime_latency`'s; with `latency.node_resources` the task goes to the node offering those
Ray custom resources (a device joined as a latency node) and reserves all of its CPUs; the driver
checks before the first stage that some node offers them (`check_latency_node`). Every figure says
whether its node shares cores with another alive node (`shared_cores`, `orchestrator/search/nodes.py`).
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
    from workers.runtime_latency import measure_in_runtime

    keys = list(models)
    loaded = [load_checkpoint(models[key])[0].eval() for key in keys]
    out: dict = {key: {} for key in keys}
    for batch, (x, lengths) in examples.items():
        example = (torch.as_tensor(x), torch.as_tensor(lengths))  # x (B L) tokens or (B L C); lengths (B,)
        figures = measure_in_runtime(loaded, example, latency)
        for key, fig in zip(keys, figures):
            out[key][int(batch)] = dict(fig)
    return out


def whole_node_cpus(wanted: Mapping[str, float] | None = None) -> int:
    """CPUs of the node the latency task runs on (what 'exclusive' reserves): the largest alive node,
    or the node offering the custom resources `wanted` (`workers.latency_node.latency_node_cpus`)."""
    import ray

    from workers.latency_node import latency_node_cpus

    return latency_node_cpus(ray.nodes(), dict(wanted or {}))


def check_latency_node(wanted: Mapping[str, float]) -> None:
    """`ConfigError` (one line, exit 2) when no node of the running Ray cluster offers the
    latency.node_resources `wanted` (Ray would wait for one forever). Called by the driver once Ray
    has started, before stage 0; the check itself is `workers.latency_node.missing_node_resources`."""
    if not wanted:
        return
    import ray

    from search_spaces.errors import ConfigError
    from workers.latency_node import missing_node_resources

    message = missing_node_resources(wanted, ray.cluster_resources())
    if message:
        raise ConfigError(message)


def measure_stage(models: Mapping[str, str], examples: Mapping[int, tuple], latency: Mapping, *,
                  in_process: bool = False) -> dict:
    """Like `measure_models`, inside a Ray task holding a whole node (and a GPU on CUDA) if Ray runs.

    in_process: measure in this process instead (the embedded single-node case: the stage's trials
    have finished, so the driver already has the machine to itself and skips a worker start); never
    with latency.node_resources, whose node is elsewhere.
    """
    from orchestrator.search.nodes import with_shared_cores

    return with_shared_cores(_measure_stage(models, examples, latency, in_process=in_process))


def _measure_stage(models: Mapping[str, str], examples: Mapping[int, tuple], latency: Mapping, *,
                   in_process: bool) -> dict:
    if not models:
        return {}
    wanted = dict(latency.get("node_resources") or {})
    try:
        import ray
    except ImportError:  # pragma: no cover
        return measure_models(models, examples, latency)
    if not wanted and (not ray.is_initialized() or in_process):
        return measure_models(models, examples, latency)
    if not ray.is_initialized():  # ray.remote would start a one-node Ray that never offers `wanted`
        from search_spaces.errors import ConfigError

        raise ConfigError(f"latency.node_resources={wanted}: measuring on a latency node needs a running Ray cluster")
    gpus = 1 if str(latency.get("device", "cpu")).startswith("cuda") else 0
    task = ray.remote(num_cpus=whole_node_cpus(wanted), num_gpus=gpus, resources=wanted or None,
                      max_retries=2)(measure_models)
    return ray.get(task.remote(dict(models), dict(examples), dict(latency)))
