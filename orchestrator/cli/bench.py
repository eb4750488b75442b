"""`s4op bench latency`: dense vs pruned latency under the latency protocol, with the breakdown.

Prints a table (rich) of achieved vs ideal time per rate, bypass, kernel mode and batch size, and
the fixed/SSM breakdown of the dense model; `--json` prints one JSON object instead:
{"machine": {...}, "rows": [...], "breakdown": [...], "targets": {"wall": ..., "cpu": ..., "min": ...}}.
Ratios come on three clocks: the wall-clock p50 (the protocol's latency), the process-CPU p50 and
the wall-clock minimum; on a contended shared machine the last two show the intrinsic cost.
"""

from __future__ import annotations

import json
import sys

import typer

from workers.models.layer import BYPASS_MODES, KERNEL_MODES

bench_app = typer.Typer(help="Reproducible performance measurements.", no_args_is_help=True,
                        add_completion=False, rich_markup_mode=None)


@bench_app.command("latency")
def latency(
    preset: str = typer.Option("listops-s4d", "--preset", help="Model preset <task>-<model>, e.g. listops-s4d."),
    rates: str = typer.Option("0,0.1,0.3,0.5,0.7,0.9", "--rates", help="Comma-separated pruning rates in [0, 1)."),
    batch_sizes: str = typer.Option("1", "--batch-sizes", help="Comma-separated batch sizes."),
    threads: int = typer.Option(1, "--threads", help="torch intra-op threads during timing."),
    bypass: str = typer.Option(",".join(BYPASS_MODES), "--bypass", help="Comma-separated: identity, zero (default: both)."),
    kernel: str = typer.Option("cached", "--kernel",
                               help="cached (fft(K) cached in eval), per-forward (K every call), comma-separated for both."),
    repeats: int = typer.Option(30, "--repeats", help="Timed runs per figure (>= 30)."),
    warmup: int = typer.Option(5, "--warmup", help="Untimed warm-up runs per figure."),
    seed: int = typer.Option(0, "--seed", help="Seed of the weights, inputs and pruned channels."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda[:k]."),
    length: int = typer.Option(None, "--length", help="Override the preset's sequence length (quick checks)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    checkpoint: str = typer.Option(None, "--checkpoint", help="Time this checkpoint folder's model (e.g. from s4op "
                                   "import) instead of a preset's random weights."),
) -> None:
    """Time dense and pruned models of the paper's sizes (random weights) and compare with the ideal."""
    from workers import bench

    preset_obj = bench.bench_preset(preset) if checkpoint is None else None  # validate options before timing
    rate_list = bench.parse_rates(rates)
    batch_list = bench.parse_batch_sizes(batch_sizes)
    bypass_list = bench.parse_choices("--bypass", bypass, BYPASS_MODES)
    kernel_list = bench.parse_choices("--kernel", kernel, KERNEL_MODES)
    bench.check_count("--repeats", repeats, bench.MIN_REPEATS)
    bench.check_count("--threads", threads, 1)
    bench.check_count("--warmup", warmup, 0)
    if length is not None:
        bench.check_count("--length", length, 1)
    progress = None if json_out else (lambda msg: print(f"  timing {msg}", file=sys.stderr))
    result = bench.run_latency_bench(preset_obj.name if preset_obj else preset, checkpoint=checkpoint,
                                     rates=rate_list, batch_sizes=batch_list, threads=threads,
                                     bypasses=bypass_list, kernels=kernel_list, repeats=repeats, warmup=warmup,
                                     seed=seed, device=device, length=length, progress=progress)
    if json_out:
        print(json.dumps(result))
    else:
        print_tables(result)


def print_tables(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=170)
    m = result["machine"]
    console.print(f"s4op bench latency: {result['preset']} on {m['processor']} ({m['cpu_count']} cores), "
                  f"threads={m['threads']}, device={m['device']}, torch {m['torch']}, {m['date']}, "
                  f"load average (1 min) {m['loadavg_1m']} -> {m['loadavg_1m_end']}")
    parts = Table(title="Dense model: fixed parts vs SSM convolution (wall p50 | process CPU p50 | wall min)")
    for col in ("kernel", "batch", "length", "total ms", "fixed ms", "SSM ms", "SSM share",
                "cpu total", "cpu fixed", "cpu SSM", "min total", "min fixed", "min SSM"):
        parts.add_column(col, justify="right")
    for b in result["breakdown"]:
        parts.add_row(b["kernel"], str(b["batch"]), str(b["length"]), f"{b['total_ms']:.2f}",
                      f"{b['fixed_ms']:.2f}", f"{b['ssm_ms']:.2f}", f"{100 * b['ssm_share']:.1f} %",
                      *(f"{b[k]:.2f}" for k in ("cpu_total_ms", "cpu_fixed_ms", "cpu_ssm_ms", "min_total_ms",
                                                 "min_fixed_ms", "min_ssm_ms")))
    console.print(parts)
    rows = Table(title="Achieved vs ideal (ideal = fixed + kept fraction x SSM), per clock")
    for col in ("bypass", "kernel", "batch", "rate", "kept", "params", "p50 ms", "p90 ms", "ideal ms",
                "p50/ideal", "p50/dense", "cpu/ideal", "cpu/dense", "min ms", "min/ideal", "min/dense"):
        rows.add_column(col, justify="right")
    for r in result["rows"]:
        rows.add_row(r["bypass"], r["kernel"], str(r["batch"]), f"{r['rate']:.2f}", f"{r['kept_fraction']:.3f}",
                     f"{r['params']:,}", f"{r['p50_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['ideal_ms']:.2f}",
                     *(f"{r[k]:.3f}" for k in ("ratio_to_ideal", "ratio_to_dense", "cpu_ratio_to_ideal",
                                                "cpu_ratio_to_dense")),
                     f"{r['min_ms']:.2f}", f"{r['min_ratio_to_ideal']:.3f}", f"{r['min_ratio_to_dense']:.3f}")
    console.print(rows)
    for clock, found in result["targets"].items():
        for name, t in found.items():
            console.print(f"target {name} ({clock}): {t['value']:.3f} (want {t['target']}): "
                          f"{'met' if t['met'] else 'MISSED'}")


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
