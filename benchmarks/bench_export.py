"""Latency of the exported model: PyTorch eager vs onnxruntime, 1 thread, batch 1.

ListOps-shaped S4D (8 layers x H 128, N 64, L 2048, 18 tokens, 10 classes, batch norm) pruned with
the depth-aware allocation and random channels (seed 0) at each rate, compacted, kernels cached.
Eager = the S4Model itself in eval mode (fft(K) cached), timed by `workers.latency.measure_latency`;
ONNX = the deployable forms (`workers.export.deployable`): "fft" (cached kernel spectrum, rfft/irfft
as ONNX DFT) and "scan" (chunked S4D scan as matmuls), exported with torch.onnx and run by
onnxruntime (CPUExecutionProvider, intra-op threads 1), timed with the same protocol (warm-up, then
`--repeats` timed runs, median and p90). Each row also gives the largest |onnx - eager| logit.

    python benchmarks/bench_export.py [--rates 0 0.5 0.7 0.9] [--length 2048] [--repeats 30]
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from search_spaces.allocation import allocate  # noqa: E402
from workers import export as ex  # noqa: E402
from workers.latency import measure_latency  # noqa: E402
from workers.models import ModelSpec, S4Model  # noqa: E402
from workers.pruning import compact, count_parameters  # noqa: E402


def pruned_model(dense: S4Model, rate: float, seed: int = 0) -> S4Model:
    """Depth-aware counts per layer, channels drawn at random (seeded), compacted."""
    H, n = dense.spec.d_model, dense.spec.n_layers
    if rate == 0:
        return dense
    counts = allocate("depth-aware", rate, n, H)
    rng = random.Random(seed)
    kept = [sorted(rng.sample(range(H), H - c)) for c in counts]
    return compact(dense, kept).eval()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.5, 0.7, 0.9])
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--d-state", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    spec = ModelSpec(kind="s4d", d_input=18, d_output=10, input_kind="tokens", d_model=args.d_model,
                     n_layers=args.layers, d_state=args.d_state, norm="batch", prenorm=False)
    dense = S4Model(spec).eval()
    print(f"# bench_export: {datetime.now(timezone.utc).isoformat(timespec='seconds')}, "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"onnxruntime {__import__('onnxruntime').__version__}, 1 thread, batch 1, L {args.length}, "
          f"S4D {args.layers} x {args.d_model}, N {args.d_state}, {args.repeats} runs (median, p90)")
    print("| rate | params | eager p50 (p90) ms | onnx fft p50 (p90) ms | onnx scan p50 (p90) ms "
          "| fft / eager | scan / eager | max abs diff fft, scan |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for rate in args.rates:
            model = pruned_model(dense, rate)
            x = ex.example_input(model, 1, args.length)  # (1 L)
            eager = measure_latency(model, (x,), repeats=args.repeats, warmup=args.warmup, threads=1)
            row = {}
            for form in ("fft", "scan"):
                module = ex.deployable(model, args.length, form)
                path = ex.write_export(module, (x,), "onnx", Path(tmp) / f"r{rate}-{form}.onnx", {"rate": rate})
                diff = ex.max_abs_diff(path, "onnx", model, module, (x,))
                timing = ex.time_callable(ex.run_exported(path, "onnx", module, (x,), threads=1),
                                          repeats=args.repeats, warmup=args.warmup)
                row[form] = (timing, diff)
            cells = [f"{rate:.0%}", f"{count_parameters(model):,}", f"{eager['p50_ms']:.1f} ({eager['p90_ms']:.1f})"]
            cells += [f"{row[f][0]['p50_ms']:.1f} ({row[f][0]['p90_ms']:.1f})" for f in ("fft", "scan")]
            cells += [f"{row[f][0]['p50_ms'] / eager['p50_ms']:.2f}" for f in ("fft", "scan")]
            cells += [f"{row['fft'][1]:.1e}, {row['scan'][1]:.1e}"]
            print("| " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
