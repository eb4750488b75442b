"""Issue 18's figure: latency of listops-s4d in eager PyTorch vs ONNX Runtime, side by side in one run.

    .venv/bin/python benchmarks/bench_runtime_latency.py [--rates 0,0.3,0.7,0.9] [--repeats 30] [--length 2048]

Models as `s4op bench latency` builds them (`workers.bench`): the listops-s4d preset (8 x 128, N 64,
L 2048), random weights, pruned at each rate with the depth-aware allocation and seeded random
channels, identity bypass, compacted. torch = the S4Model in eval mode with its cached kernels on
(x, lengths), as `latency.runtime: torch` times it; onnxruntime = the form `latency.runtime:
onnxruntime` times (`workers.runtime_latency.onnx_sequence_call`: `s4op export`'s "auto" form,
checked within 1e-4 of PyTorch, 1 intra-op thread, sequential). Besides each model, the "fixed part"
(every SSM convolution replaced by the identity) is timed in both runtimes, so that each pruned
model's ideal is  fixed + kept fraction x (dense - fixed)  in its own runtime. All models of both
runtimes are timed interleaved (each round runs every one once), 1 thread, batch 1.
Goals: onnxruntime / torch <= 1 at every rate; identity bypass within 10 % of its ideal in ONNX Runtime.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from workers import bench as wb  # noqa: E402
from workers import export as ex  # noqa: E402
from workers.latency import time_interleaved, timing_figures  # noqa: E402
from workers.latency_node import node_facts  # noqa: E402
from workers.runtime_latency import onnx_sequence_call  # noqa: E402


def onnx_fixed_call(dense, x: torch.Tensor, path: Path, threads: int):
    """The deployable form of `dense` with every SSM convolution the identity, in an ORT session."""
    module = ex.deployable(dense, int(x.shape[1]), "auto")
    for block in module.model.blocks:
        block.conv = nn.Identity()
    session = ex.onnx_session(ex.write_export(module, (x,), "onnx", path, {"fixed": True}), threads)
    feed = {session.get_inputs()[0].name: x.numpy()}
    return lambda: session.run(None, feed)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="0,0.3,0.7,0.9")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--length", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    rates = sorted(set(wb.parse_rates(args.rates)) | {0.0})  # the dense model: the ideals' reference
    preset = wb.bench_preset("listops-s4d")
    L = args.length or preset.length
    threads = 1
    torch.set_num_threads(threads)
    dense = wb.dense_model(preset, 0)
    models = {rate: wb.pruned_model(dense, rate, "identity", 0) for rate in rates}
    kept = {rate: sum(len(b.conv.kept) for b in m.blocks) / (preset.spec.d_model * preset.spec.n_layers)
            for rate, m in models.items()}
    x, lengths = wb.example_input(preset.spec, 1, L, 0)  # (1 L), (1)
    calls, checks = {}, {}
    with torch.inference_mode(), tempfile.TemporaryDirectory(prefix="s4op-bench-") as tmp:
        fixed = wb.without_ssm(dense)
        calls["torch", "fixed"] = lambda: fixed(x, lengths)
        calls["onnxruntime", "fixed"] = onnx_fixed_call(dense, x, Path(tmp) / "fixed.onnx", threads)
        for rate, model in models.items():
            calls["torch", f"{rate:g}"] = lambda m=model: m(x, lengths)
            call, facts = onnx_sequence_call(model, x, Path(tmp) / f"r{rate:g}.onnx", threads, f"rate {rate:g}")
            calls["onnxruntime", f"{rate:g}"], checks[f"{rate:g}"] = call, facts
        keys = list(calls)
        timed = dict(zip(keys, time_interleaved([calls[k] for k in keys], repeats=args.repeats, warmup=args.warmup)))
    fig = {k: timing_figures(*v) for k, v in timed.items()}
    machine = wb.machine_info(threads, "cpu") | {"onnxruntime": node_facts("onnxruntime")["runtime_version"],
                                                  "cpu_model": node_facts("torch")["node_cpu"]}
    print(f"# bench_runtime_latency: {machine['date']}, {machine['cpu_model']} ({machine['cpu_count']} cores), "
          f"torch {machine['torch']}, {machine['onnxruntime']}, {threads} thread, batch 1, L {L}, listops-s4d "
          f"identity bypass, {args.repeats} interleaved rounds, load avg {machine['loadavg_1m']}")
    rows = []
    for clock, c in (("wall p50", "p50_ms"), ("process CPU p50", "cpu_p50_ms")):
        print(f"\n{clock} (ms):\n")
        print("| rate | kept | torch | onnxruntime | ort / torch | torch / ideal | ort / ideal | ort form, max abs diff |")
        print("|---|---|---|---|---|---|---|---|")
        for rate in rates:
            name = f"{rate:g}"
            row = {"rate": rate, "clock": c, "kept_fraction": kept[rate]}
            for runtime in ("torch", "onnxruntime"):
                dense_t, fixed_t, t = fig[runtime, "0"][c], fig[runtime, "fixed"][c], fig[runtime, name][c]
                row[runtime] = t
                row[f"{runtime}_ratio_to_ideal"] = t / (fixed_t + kept[rate] * (dense_t - fixed_t))
            row["ort_over_torch"] = row["onnxruntime"] / row["torch"]
            rows.append(row)
            check = checks[name]
            print(f"| {rate * 100:.0f} % | {kept[rate]:.3f} | {row['torch']:.1f} | {row['onnxruntime']:.1f} | "
                  f"{row['ort_over_torch']:.2f} | {row['torch_ratio_to_ideal']:.2f} | "
                  f"{row['onnxruntime_ratio_to_ideal']:.2f} | {check['onnx_form']}, {check['onnx_max_abs_diff']:.1e} |")
        print(f"| fixed part | - | {fig['torch', 'fixed'][c]:.1f} | {fig['onnxruntime', 'fixed'][c]:.1f} | "
              f"{fig['onnxruntime', 'fixed'][c] / fig['torch', 'fixed'][c]:.2f} | - | - | - |")
    wall = [r for r in rows if r["clock"] == "p50_ms"]
    worst_speed = max(r["ort_over_torch"] for r in wall)
    ideal = [abs(r["onnxruntime_ratio_to_ideal"] - 1) for r in wall if r["rate"] > 0]
    print(f"\ngoal onnxruntime no slower than torch at any rate (wall p50): worst ort / torch = {worst_speed:.2f} "
          f"{'met' if worst_speed <= 1.0 else 'MISSED'}")
    if ideal:
        print(f"goal identity bypass within 10 % of its ideal in onnxruntime (wall p50): worst |ratio - 1| = "
              f"{max(ideal):.3f} {'met' if max(ideal) <= 0.10 else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows, "checks": checks}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
