"""The report's figures (matplotlib, Agg backend, PNG), one function per figure.

Every function takes one or more searches keyed by a label (the search name) so `--compare` draws
several searches on the same axes, the paper's Figures 3 and 4: metric vs rate, latency vs rate,
the Pareto front of metric vs latency over all trials, the kept channels per layer per rate, and
the layer ablation's bar plot (Table I).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from orchestrator.reports.table import pareto_front  # noqa: E402

MARKERS = "osD^vP*X"


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def metric_label(tables: dict[str, pd.DataFrame]) -> str:
    table = next(iter(tables.values()))
    name = table["metric_name"].dropna().iloc[0] if table["metric_name"].notna().any() else "metric"
    return f"{table['metric_source'].iloc[0]} {name} (%)"


def plot_metric_vs_rate(tables: dict[str, pd.DataFrame], path) -> Path:
    """Selected model's metric (%) vs pruning rate (%), with the min-max band over seeds."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (label, t) in enumerate(tables.items()):
        x = t["rate"] * 100
        line, = ax.plot(x, t["metric"] * 100, marker=MARKERS[i % len(MARKERS)], label=label)
        ax.fill_between(x, t["metric_min"].astype(float) * 100, t["metric_max"].astype(float) * 100,
                        color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_xlabel("pruning rate (%)")
    ax.set_ylabel(metric_label(tables))
    ax.set_title("Metric vs pruning rate (band: min-max over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_latency_vs_rate(tables: dict[str, pd.DataFrame], path) -> Path:
    """Selected model's median latency (ms) vs pruning rate (%), latency change % (negative = faster) annotated."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (label, t) in enumerate(tables.items()):
        x = t["rate"] * 100
        ax.plot(x, t["latency_ms"], marker=MARKERS[i % len(MARKERS)], label=label)
        for xi, yi, s in zip(x, t["latency_ms"], t["speedup_pct"]):
            if len(tables) == 1 and pd.notna(yi) and pd.notna(s) and s != 0:
                ax.annotate(f"{-s:+.0f}%", (xi, yi), textcoords="offset points", xytext=(0, 6),
                            ha="center", fontsize=7)
    ax.set_xlabel("pruning rate (%)")
    ax.set_ylabel("latency p50 (ms)")
    ax.set_ylim(bottom=0)
    ax.set_title("Latency vs pruning rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_pareto(trials: dict[str, pd.DataFrame], path, metric_label: str = "metric (%)") -> Path:
    """Every completed trial as (latency, metric); the Pareto front of each search as a step line."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, (label, t) in enumerate(trials.items()):
        if t.empty:
            continue
        marker = MARKERS[i % len(MARKERS)]
        points = ax.scatter(t["latency_p50_ms"], t["metric"] * 100, c=t["rate"] * 100, cmap="viridis",
                            vmin=0, vmax=100, marker=marker, s=22, alpha=0.7, edgecolors="none")
        front = pareto_front(t)
        ax.step(front["latency_p50_ms"], front["metric"] * 100, where="post", marker=marker,
                markerfacecolor="none", color=f"C{i}", label=f"{label}: Pareto front")
    if trials and any(not t.empty for t in trials.values()):
        fig.colorbar(points, ax=ax, label="pruning rate (%)")
    ax.set_xlabel("latency p50 (ms)")
    ax.set_ylabel(metric_label)
    ax.set_title("Metric vs latency over all trials")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_kept_heatmap(rates: list[float], matrix: list[list[int]], channels: int | None, path,
                      title: str = "Kept channels per layer") -> Path:
    """Heat map: rows = layers, columns = rates, cell = kept channels (fraction of H coloured)."""
    import numpy as np

    data = np.asarray(matrix, dtype=float)  # (layers rates)
    scale = float(channels or (data.max() if data.size else 1.0))
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * max(len(rates), 1), 1.2 + 0.45 * max(len(matrix), 1)))
    image = ax.imshow(data / scale, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            ax.text(j, i, f"{int(data[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if data[i, j] / scale > 0.6 else "black")
    ax.set_xticks(range(len(rates)), [f"{r * 100:.0f}%" for r in rates])
    ax.set_yticks(range(data.shape[0]), [f"layer {i}" for i in range(data.shape[0])])
    ax.set_xlabel("pruning rate")
    ax.set_title(title + (f" (H = {channels})" if channels else ""), fontsize=10)
    fig.colorbar(image, ax=ax, label="kept fraction")
    return _save(fig, path)


def plot_ablation(table: pd.DataFrame, path) -> Path:
    """Table I as bars: metric with each layer's SSM operators bypassed; dashed line = baseline."""
    fig, ax = plt.subplots(figsize=(1.5 + 0.6 * len(table), 4.0))
    layers = table[table["layer"] >= 0]
    base = table[table["layer"] < 0]["metric"]
    ax.bar([f"{int(i)}" for i in layers["layer"]], layers["metric"] * 100, color="C1")
    if len(base):
        ax.axhline(float(base.iloc[0]) * 100, color="k", linestyle="--", label="baseline")
        ax.legend(fontsize=8)
    ax.set_xlabel("layer with SSM operators deactivated")
    ax.set_ylabel(f"val {table['metric_name'].iloc[0]} (%)")
    ax.set_title("Layer ablation (no fine-tuning)")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)
