"""The search's trade-off figure: the best model's val metric and latency against the pruning rate.

Drawn from ledger rows (`StageRow`s, `TrialRow`s) after each stage (the search run's `tradeoff.png`
and the stage run's `progress.png`, replaced as stages end) and by `s4op sync-mlflow`. Left panel:
each stage's best val metric with every completed trial's value as a dot (the seed spread) and
the dense model's as a dashed line; right panel: the best model's latency p50 with its p50-p90
band and the dense latency. Both y axes start at zero (a +-5 % noise must not look like a trend)
and the x axis spans 0-100 % whatever stages are done.
"""

from __future__ import annotations

import math
from pathlib import Path


def _ok(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def tradeoff_figure(stages, trials, path, *, metric_name: str | None = None, title: str = "") -> Path:
    """Write the PNG to `path` (1200 x 560 px) and return it; `stages` / `trials`: ledger rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = sorted((r for r in stages if r.status == "completed"), key=lambda r: r.rate or 0.0)
    dense = next((r for r in done if r.stage == 0), None)
    metric = (metric_name or "metric").replace("_", "-")
    x = [100.0 * float(r.rate or 0.0) for r in done]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.6), dpi=100)

    by_stage = {r.stage: 100.0 * float(r.rate or 0.0) for r in done}
    seeds = [(by_stage[t.stage], float(t.val_metric)) for t in trials
             if t.status == "completed" and t.stage in by_stage and _ok(t.val_metric)]
    if seeds:
        left.scatter(*zip(*seeds), s=22, color="tab:blue", alpha=0.35, label="each trial (seed spread)", zorder=2)
    left.plot(x, [r.val_metric for r in done], "o-", color="tab:blue", lw=2, label="best trial", zorder=3)
    if dense is not None and _ok(dense.val_metric):
        left.axhline(dense.val_metric, ls="--", color="grey", lw=1, label="dense")
    top = max([1.0] + [v for _, v in seeds] + [float(r.val_metric) for r in done if _ok(r.val_metric)])
    left.set_ylim(0, top * 1.02 if top > 1.0 else 1.0)
    left.set_ylabel(f"val {metric} (axis from 0)")
    left.set_title(f"val {metric} vs pruning rate")

    p50 = [r.latency_p50_ms for r in done]
    p90 = [r.latency_p90_ms if _ok(r.latency_p90_ms) else r.latency_p50_ms for r in done]
    right.fill_between(x, p50, p90, color="tab:red", alpha=0.2, label="p50-p90 band")
    right.plot(x, p50, "s-", color="tab:red", lw=2, label="latency p50 (best trial)")
    if dense is not None and _ok(dense.latency_p50_ms):
        right.axhline(dense.latency_p50_ms, ls="--", color="grey", lw=1, label="dense p50")
        for xi, r in zip(x, done):
            if r.stage > 0 and _ok(r.latency_p50_ms) and float(dense.latency_p50_ms) > 0:
                change = 100.0 * (float(r.latency_p50_ms) / float(dense.latency_p50_ms) - 1.0)
                right.annotate(f"{change:+.1f} %", (xi, r.latency_p50_ms), textcoords="offset points",
                               xytext=(0, 8), ha="center", fontsize=9)
    highest = max([float(v) for v in p90 if _ok(v)] or [1.0])
    right.set_ylim(0, highest * 1.15)
    right.set_ylabel("latency (ms, axis from 0)")
    right.set_title("latency vs pruning rate (labels: change vs dense)")

    for ax in (left, right):
        ax.set_xlim(-3, 100)
        ax.set_xlabel("pruning rate (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, frameon=False)  # off the data
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
