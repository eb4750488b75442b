"""Latency in the runtime the model is deployed with (PyTorch eager or ONNX Runtime), over the whole
sequence or per streaming step, under the latency protocol (warm-up, >= 30 timed runs, p50/p90,
fixed threads).

`measure_in_runtime(models, example, latency)` gives one figure per model; the models are timed
interleaved (each round runs every model once), so drift of the machine favours none of them.
- sequence, torch: `workers.latency.measure_latency_interleaved` on model(x, lengths);
- sequence, onnxruntime: the convolution form `s4op export` writes (`export.deployable`, form
  "auto": the chunked scan for unidirectional S4D, the cached-FFT form otherwise) at the example's
  length L, exported to ONNX (`export.write_export`) and run in an ONNX Runtime session
  (`export.onnx_session`: `threads` intra-op, 1 inter-op, sequential execution). Before timing, its
  logits must match the PyTorch model's within `ONNX_TOLERANCE` (else `LatencyError`);
- step (besides the sequence figure): the streaming form `s4op export --streaming` writes
  (`export.streaming`), one sample x_t at a time with the state fed back, figures per step
  (step_p50_ms, step_p90_ms, step_cpu_p50_ms); with onnxruntime its ONNX export, checked against
  the eager PyTorch step over `CHECK_STEPS` steps within `ONNX_TOLERANCE` before timing.
Each figure names the runtime, the mode and the node (`workers.latency_node.node_facts`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch

from search_spaces.errors import ConfigError, LatencyError
from workers import export as ex
from workers.latency import (check_protocol, measure_latency_interleaved, protocol_summary, time_interleaved,
                             timing_figures)
from workers.latency_node import node_facts
from workers.models.backbone import S4Model

RUNTIMES = ("torch", "onnxruntime")
MODES = ("sequence", "step")
ONNX_TOLERANCE = 1e-4
CHECK_STEPS = 8


def measure_in_runtime(models: list[S4Model], example: tuple, latency: Mapping) -> list[dict]:
    """One latency figure per model on `example` = (x, lengths), x (B L) tokens or (B L d_input).

    latency: the config's latency section as a dict (runtime, mode, repeats, warmup, threads,
    device). Each figure: `workers.latency.measure_latency`'s keys (p50_ms, p90_ms, ..., batch,
    length, device), runtime, mode, runtime_version, node_hostname, node_cpu, node_arch, node_id;
    onnx_form and onnx_max_abs_diff with onnxruntime; step_* figures in step mode.
    """
    runtime, mode = str(latency.get("runtime", "torch")), str(latency.get("mode", "sequence"))
    if runtime not in RUNTIMES:
        raise ConfigError(f"latency.runtime: got {runtime!r}, expected one of {', '.join(RUNTIMES)}")
    if mode not in MODES:
        raise ConfigError(f"latency.mode: got {mode!r}, expected one of {', '.join(MODES)}")
    protocol = {"repeats": int(latency.get("repeats", 30)), "warmup": int(latency.get("warmup", 5)),
                "threads": int(latency.get("threads", 1))}
    models = [m.eval() for m in models]
    if runtime == "torch":
        figures = measure_latency_interleaved([(m, example) for m in models], device=str(latency.get("device", "cpu")),
                                              **protocol)
    else:
        figures = onnx_sequence_figures(models, example[0], **protocol)
    if mode == "step":
        steps = step_figures(models, example[0], runtime, **protocol)
        figures = [{**f, **s} for f, s in zip(figures, steps)]
    facts = node_facts(runtime)
    return [{**f, "runtime": runtime, "mode": mode, **facts} for f in figures]


# ---- sequence form in ONNX Runtime ----------------------------------------------------------------

def onnx_sequence_figures(models: list[S4Model], x: torch.Tensor, *, repeats: int, warmup: int,
                          threads: int) -> list[dict]:
    """Each model's exported convolution form timed in an ONNX Runtime session (interleaved)."""
    check_protocol(repeats, warmup, threads, "cpu")
    x = x.cpu()  # (B L) or (B L d_input)
    with tempfile.TemporaryDirectory(prefix="s4op-latency-") as tmp:
        exported = [onnx_sequence_call(m, x, Path(tmp) / f"model-{i}.onnx", threads, f"model {i}")
                    for i, m in enumerate(models)]
    timed = time_interleaved([call for call, _ in exported], repeats=repeats, warmup=warmup)
    return [{**protocol_summary(t, c, repeats=repeats, threads=threads, batch=x.shape[0], length=x.shape[1],
                                device="cpu"), **e} for (t, c), (_, e) in zip(timed, exported)]


def onnx_sequence_call(model: S4Model, x: torch.Tensor, path: Path, threads: int, name: str = "model"):
    """(call, facts): `model`'s convolution form exported to `path` as `s4op export` does, in an ONNX
    Runtime session fed `x`; checked against model(x) within `ONNX_TOLERANCE` first. facts:
    onnx_form, onnx_max_abs_diff. The session keeps the graph in memory: `path` may go afterwards."""
    module = ex.deployable(model, int(x.shape[1]), "auto")
    session = ex.onnx_session(ex.write_export(module, (x,), "onnx", path, ex.describe(model, module)), threads)
    feed = {session.get_inputs()[0].name: x.numpy()}
    with torch.inference_mode():
        expected = model(x).numpy()  # (B d_output) eager PyTorch, all L positions
    diff = _checked_diff(session.run(None, feed)[0], expected, f"{name} ({module.form} form, L {x.shape[1]})")
    return (lambda: session.run(None, feed)), {"onnx_form": module.form, "onnx_max_abs_diff": diff}


def _checked_diff(got, expected: np.ndarray, what: str) -> float:
    """max |got - expected|; `LatencyError` when it exceeds `ONNX_TOLERANCE` (or is not finite)."""
    diff = float(np.abs(np.asarray(got, dtype=np.float64) - expected).max())
    if not diff <= ONNX_TOLERANCE:
        raise LatencyError(f"latency.runtime=onnxruntime: the ONNX export of {what} differs from PyTorch by {diff:.3g} "
                           f"(> {ONNX_TOLERANCE:g}); not timing a model that computes something else "
                           f"(use latency.runtime=torch, or report the model to `s4op export`'s maintainers)")
    return diff


# ---- step (streaming) form ------------------------------------------------------------------------

class Stepper:
    """One streaming step per call: x_t = x[:, t mod L], the state fed back; returns the logits."""

    def __init__(self, run: Callable, x, state: tuple):
        self.run, self.x, self.state, self.t = run, x, state, 0  # x (B L) or (B L d_input)

    def __call__(self):
        x_t = self.x[:, self.t % self.x.shape[1]]  # (B) or (B d_input)
        self.t += 1
        logits, self.state = self.run(x_t, self.state)
        return logits


def torch_stepper(module: ex.Streaming, x: torch.Tensor) -> Stepper:
    """The streaming module stepped eagerly in PyTorch (call it under `torch.inference_mode`)."""
    def run(x_t, state):
        out = module(x_t, *state)
        return out[0], tuple(out[1:])
    return Stepper(run, x, module.initial_state(x.shape[0]))


def onnx_stepper(session, x: torch.Tensor, initial: tuple) -> Stepper:
    """The exported streaming step run by an ONNX Runtime session (numpy in and out)."""
    names = [arg.name for arg in session.get_inputs()]

    def run(x_t, state):
        out = session.run(None, dict(zip(names, (x_t, *state))))
        return out[0], tuple(out[1:])
    return Stepper(run, x.numpy(), tuple(t.numpy() for t in initial))


def step_figures(models: list[S4Model], x: torch.Tensor, runtime: str, *, repeats: int, warmup: int,
                 threads: int) -> list[dict]:
    """Per-step figures of each model's streaming form in `runtime`, interleaved; one sample per step."""
    check_protocol(repeats, warmup, threads, "cpu")
    x = x.cpu()  # (B L) or (B L d_input)
    modules = [ex.streaming(m) for m in models]
    extra: list[dict] = [{} for _ in modules]
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode(), tempfile.TemporaryDirectory(prefix="s4op-latency-") as tmp:
            if runtime == "torch":
                calls = [torch_stepper(module, x) for module in modules]
            else:
                calls = []
                for i, (model, module) in enumerate(zip(models, modules)):
                    initial = module.initial_state(x.shape[0])
                    path = ex.write_export(module, (x[:, 0], *initial), "onnx", Path(tmp) / f"step-{i}.onnx",
                                           ex.describe(model, module))
                    session = ex.onnx_session(path, threads)
                    eager, exported = torch_stepper(module, x), onnx_stepper(session, x, initial)
                    diff = max(_checked_diff(exported(), eager().numpy(), f"model {i} (streaming step {t})")
                               for t in range(CHECK_STEPS))
                    extra[i]["step_onnx_max_abs_diff"] = diff
                    calls.append(onnx_stepper(session, x, initial))
            timed = time_interleaved(calls, repeats=repeats, warmup=warmup)
    finally:
        torch.set_num_threads(old_threads)
    out = []
    for (t, c), e in zip(timed, extra):
        f = timing_figures(t, c)
        out.append({"step_p50_ms": f["p50_ms"], "step_p90_ms": f["p90_ms"], "step_cpu_p50_ms": f["cpu_p50_ms"], **e})
    return out
