"""Inference latency of a model under the latency protocol of the design.

Eval mode, no autograd (`torch.inference_mode`), a fixed number of intra-op threads, `warmup`
untimed runs, then `repeats` >= 30 timed runs of one forward pass; the figures are the median
(p50), the 90th percentile, the mean and the minimum in milliseconds of wall-clock time. Beside
them, cpu_p50_ms / cpu_p90_ms give the process CPU time of the same runs: on a shared, contended
machine it is far less disturbed by other tenants than wall time (it counts only this process's
work), so ratios between models are best read from it there; on an exclusive CPU node the two
agree at threads=1. On CUDA the device is synchronised before the first run and after each run,
so each wall time covers the whole forward (CPU time is then not meaningful).
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from search_spaces.errors import ConfigError

MIN_REPEATS = 30


def percentile(times: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between order statistics."""
    ordered = sorted(times)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _to_device(example: tuple, device: torch.device) -> tuple:
    return tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in example)


def check_protocol(repeats, warmup, threads, device) -> torch.device:
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < MIN_REPEATS:
        raise ConfigError(f"latency.repeats: got {repeats!r}, expected an integer >= {MIN_REPEATS}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ConfigError(f"latency.warmup: got {warmup!r}, expected an integer >= 0")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"latency.threads: got {threads!r}, expected an integer >= 1")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"latency.device: got {device!r}, expected cpu or cuda[:k]") from exc
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"latency.device: got {device!r}, expected cpu or cuda[:k]")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"latency.device: got {device!r}, but CUDA is not available on this node")
    return dev


def _check_example(example) -> None:
    if not isinstance(example, tuple) or not example or not isinstance(example[0], torch.Tensor):
        raise ConfigError(f"latency example: got {type(example).__name__}, expected a tuple (x, lengths) of tensors")


def timing_figures(times: list[float], cpu: list[float]) -> dict:
    """p50_ms, p90_ms, mean_ms, min_ms (wall) and cpu_p50_ms, cpu_p90_ms (process CPU) of timed runs."""
    return {
        "p50_ms": statistics.median(times),
        "p90_ms": percentile(times, 90),
        "mean_ms": statistics.fmean(times),
        "min_ms": min(times),
        "cpu_p50_ms": statistics.median(cpu),
        "cpu_p90_ms": percentile(cpu, 90),
    }


def protocol_summary(times: list[float], cpu: list[float], *, repeats: int, threads: int, batch: int, length: int,
                     device: str) -> dict:
    """One latency figure: `timing_figures` with the protocol's facts (repeats, threads, batch, length, device)."""
    return {**timing_figures(times, cpu), "repeats": repeats, "threads": threads, "batch": int(batch),
            "length": int(length), "device": str(device)}


def _summary(times: list[float], cpu: list[float], repeats: int, threads: int, x: torch.Tensor,
             dev: torch.device) -> dict:
    return protocol_summary(times, cpu, repeats=repeats, threads=threads, batch=int(x.shape[0]),
                            length=int(x.shape[1]) if x.dim() > 1 else 1, device=str(dev))


def measure_latency(model: nn.Module, example: tuple, *, repeats: int = 30, warmup: int = 5,
                    threads: int = 1, device: str = "cpu") -> dict:
    """Time `model(*example)`; example = (x, lengths) with x (B L) tokens or (B L d_input) floats.

    Returns dict(p50_ms, p90_ms, mean_ms, min_ms, cpu_p50_ms, cpu_p90_ms, repeats, threads, batch,
    length, device).
    The model is left in eval mode on `device`; the torch thread count is restored afterwards.
    """
    return measure_latency_interleaved([(model, example)], repeats=repeats, warmup=warmup,
                                       threads=threads, device=device)[0]


def measure_latency_interleaved(entries: list[tuple[nn.Module, tuple]], *, repeats: int = 30, warmup: int = 5,
                                threads: int = 1, device: str = "cpu") -> list[dict]:
    """Time several (model, example) pairs in rounds: each round runs every model once.

    Same protocol and result per model as `measure_latency`; interleaving spreads the drift of a
    shared, noisy machine evenly over the models, so their ratios are measured fairly.
    """
    dev = check_protocol(repeats, warmup, threads, device)
    for _, example in entries:
        _check_example(example)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else None
    prepared = [(model.to(dev).eval(), _to_device(example, dev)) for model, example in entries]
    calls = [lambda m=model, i=inputs: m(*i) for model, inputs in prepared]
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            timed = time_interleaved(calls, repeats=repeats, warmup=warmup, sync=sync)
    finally:
        torch.set_num_threads(old_threads)
    return [_summary(t, c, repeats, threads, inputs[0], dev) for (t, c), (_, inputs) in zip(timed, prepared)]


def time_interleaved(calls: list, *, repeats: int, warmup: int, sync=None) -> list[tuple[list[float], list[float]]]:
    """(wall ms, process CPU ms) of `repeats` timed calls of each callable, after `warmup` untimed
    ones each; each round calls every callable once (the order of `calls`). `sync` (e.g. CUDA
    synchronise) runs before the first timed round and inside each timed call."""
    for call in calls:
        for _ in range(warmup):
            call()
    if sync is not None:
        sync()
    times: list[list[float]] = [[] for _ in calls]
    cpu: list[list[float]] = [[] for _ in calls]
    for _ in range(repeats):
        for i, call in enumerate(calls):
            start, start_cpu = time.perf_counter(), time.process_time()
            call()
            if sync is not None:
                sync()
            times[i].append((time.perf_counter() - start) * 1000.0)
            cpu[i].append((time.process_time() - start_cpu) * 1000.0)
    return list(zip(times, cpu))


def in_trial_latency_ms(model: nn.Module, x, lengths, *, repeats: int = MIN_REPEATS, warmup: int = 3) -> float:
    """A trial's own latency figure (optuna-pareto's second objective): process-CPU p50 (ms) of
    `repeats` runs at batch 1, one thread, on the first example of (x (n L ...), lengths (n,)).
    CPU time rather than wall time, since trials share cores; the stage's figures of record are
    still the exclusive `latency_p50_ms` measured after the stage."""
    example = (torch.as_tensor(x[:1]), torch.as_tensor(lengths[:1]))  # x (1 L ...), lengths (1,)
    return float(measure_latency(model, example, repeats=repeats, warmup=warmup, threads=1)["cpu_p50_ms"])
