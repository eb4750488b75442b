"""`s4op sweep report DIR`: one comparison report across a sweep's searches: each search's selected
model per rate in one table (console + CSV/Parquet `table_ii_compare`), the metric, latency and
Pareto plots with every search on the same axes, and one HTML page (`reports/pipeline.build_report`
with the other searches as `--compare`)."""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.sweep.folder import SweepFolder
from search_spaces.errors import SearchStateError

def sweep_report(sweep_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> dict:
    """The report of every search of the sweep that has a completed stage; build_report's result plus
    `table`: the combined rows (search, rate, ...) as Markdown."""
    from orchestrator.reports.pipeline import build_report
    from orchestrator.search import ledger

    folder = SweepFolder(Path(sweep_dir).resolve())
    meta = folder.read_meta()
    ready = [folder.search_dir(s["name"]) for s in meta["searches"]
             if ledger.stages_path(folder.search_dir(s["name"])).exists()
             and any(r.status == "completed" for r in ledger.stage_rows(folder.search_dir(s["name"])))]
    if not ready:
        raise SearchStateError(f"sweep {meta['name']} ({folder.root}): no search has a completed stage yet; "
                               f"see `s4op sweep status {folder.root}`")
    result = build_report(ready[0], out_dir or folder.report_dir, ready[1:])
    result["table"] = combined_table(result["out"], [p.name for p in ready])
    result["searches"] = [p.name for p in ready]
    return result


def combined_table(out: Path, names: list[str]) -> str:
    """Markdown of the selected model of each search at each rate, one row per (rate, search)."""
    import pandas as pd

    from orchestrator.reports.table import to_markdown

    path = Path(out) / ("table_ii_compare.csv" if len(names) > 1 else "table_ii.csv")
    table = pd.read_csv(path)
    table = table.assign(label=table["label"] if "label" in table else names[0])
    rows = table.sort_values(["rate", "label"], kind="stable")
    frame = pd.DataFrame({
        "rate": rows["rate"].map(lambda r: f"{r:g}"), "search": rows["label"],
        "metric": [f"{m} {v:.4f}" for m, v in zip(rows["metric_name"], rows["metric"])],
        "latency p50 ms": rows["latency_ms"].map(lambda v: f"{v:.3f}"),
        "speedup %": rows["speedup_pct"].map(lambda v: f"{v:.1f}"),
        "params": rows["params"].map(lambda v: f"{int(v):,}"),
        "reduction %": rows["param_reduction_pct"].map(lambda v: f"{v:.1f}")})
    return to_markdown(frame)
