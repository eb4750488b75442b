"""The paper's Table II from a search ledger, plus the spread of the metric across seeds per rate.

Pure pandas over the ledger (`orchestrator.search.ledger`): one row per completed stage (stage 0 = dense
baseline, rate 0), giving the selected model's metric (accuracy, or macro-F1 for ECG), its latency
with the speedup over the dense stage 0, its parameter count with the reduction, and min / median /
max of the metric over the stage's completed seed trials.

The headline metric is the test metric when every selected row has one, else the validation metric
(the one the best seed was chosen by); `metric_source` says which.

`params_no_embedding` is the count without the token embedding (token tasks; the embedding is never
pruned): the paper's IMDb counts leave it out (99,970 and 992,770 are our S4 and S4D IMDb models
without it) while its ListOps counts include it (402,954). A latency change smaller than the p50-p90
spread reads "within noise" (`orchestrator.latency_noise`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from orchestrator.search import ledger
from search_spaces.errors import SearchStateError

TABLE_COLUMNS = [
    "search", "stage", "rate", "metric_name", "metric_source", "metric", "val_metric", "test_metric",
    "latency_ms", "latency_p90_ms", "speedup_pct", "params", "params_no_embedding", "param_reduction_pct", "best_seed",
    "n_trials", "n_failed", "metric_min", "metric_median", "metric_max", "kept_per_layer",
    "latency_step_ms", "latency_runtime", "latency_node",  # per streaming step (latency.mode step); where timed
]


@dataclass
class SearchLedger:
    """A search's ledger as read from disk: its name, folder, trial rows and completed stage rows."""

    name: str
    folder: Path
    trials: pd.DataFrame
    stages: pd.DataFrame  # completed stages only, by stage


def load_search(search_dir: str | os.PathLike) -> SearchLedger:
    """Read a search folder's ledger; `SearchStateError` if there is no completed stage."""
    folder = Path(search_dir)
    if not folder.is_dir():
        raise SearchStateError(f"search folder {folder}: not found; expected a folder made by `s4op search`")
    if not ledger.stages_path(folder).is_file():
        raise SearchStateError(f"search folder {folder}: no ledger/stages.parquet; expected at least one completed stage")
    stages = ledger.read_stages(folder)
    stages = stages[stages["status"] == "completed"].sort_values("stage").reset_index(drop=True)
    if stages.empty:
        raise SearchStateError(f"search folder {folder}: no completed stage in ledger/stages.parquet; "
                               "expected at least one (run or resume the search)")
    names = stages["search"].dropna().unique()
    name = str(names[0]) if len(names) else folder.name
    return SearchLedger(name=name, folder=folder, trials=ledger.read_trials(folder), stages=stages)


def _finite(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _pct_less(value, dense) -> float:
    if not (_finite(value) and _finite(dense)) or float(dense) <= 0:
        return math.nan
    return 100.0 * (1.0 - float(value) / float(dense))


def table_ii(search: SearchLedger) -> pd.DataFrame:
    """Table II of the search: one row per completed stage, ascending rate (columns `TABLE_COLUMNS`)."""
    stages, trials = search.stages, search.trials
    use_test = bool(stages["test_metric"].map(_finite).all())
    source = "test" if use_test else "val"
    metric_col = f"{source}_metric"
    dense = stages[stages["stage"] == 0]
    dense_latency = float(dense["latency_p50_ms"].iloc[0]) if not dense.empty else math.nan
    dense_params = float(dense["params"].iloc[0]) if not dense.empty else math.nan
    done = trials[trials["status"] == "completed"] if not trials.empty else trials
    embedding = token_embedding_params(dense["checkpoint"].iloc[0] if not dense.empty else None)
    rows = []
    for stage in ledger.rows_of(stages, ledger.StageRow):
        seeds = done[done["stage"] == stage.stage][metric_col] if not done.empty else pd.Series(dtype=float)
        seeds = seeds[seeds.map(_finite)].astype(float)
        if seeds.empty and _finite(getattr(stage, metric_col)):  # stage 0 may have no trial rows
            seeds = pd.Series([float(getattr(stage, metric_col))])
        speedup = stage.speedup_pct if _finite(stage.speedup_pct) else _pct_less(stage.latency_p50_ms, dense_latency)
        reduction = (stage.param_reduction_pct if _finite(stage.param_reduction_pct)
                     else _pct_less(stage.params, dense_params))
        kept = stage.kept_channels
        rows.append({
            "search": search.name, "stage": int(stage.stage), "rate": float(stage.rate),
            "metric_name": stage.metric_name, "metric_source": source,
            "metric": float(getattr(stage, metric_col)) if _finite(getattr(stage, metric_col)) else math.nan,
            "val_metric": stage.val_metric, "test_metric": stage.test_metric,
            "latency_ms": stage.latency_p50_ms, "latency_p90_ms": stage.latency_p90_ms,
            "speedup_pct": 0.0 if stage.stage == 0 else speedup,
            "params": stage.params,
            "params_no_embedding": stage.params - embedding if embedding and _finite(stage.params) else math.nan,
            "param_reduction_pct": 0.0 if stage.stage == 0 else reduction,
            "best_seed": stage.best_seed, "n_trials": stage.n_trials, "n_failed": stage.n_failed,
            "metric_min": seeds.min() if len(seeds) else math.nan,
            "metric_median": seeds.median() if len(seeds) else math.nan,
            "metric_max": seeds.max() if len(seeds) else math.nan,
            "kept_per_layer": None if kept is None else [len(layer) for layer in kept],
            "latency_step_ms": stage.latency_step_p50_ms, "latency_runtime": stage.latency_runtime,
            "latency_node": stage.latency_node_hostname,
        })
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    return table.sort_values(["rate", "stage"]).reset_index(drop=True)


def token_embedding_params(checkpoint) -> int | None:
    """d_input x d_model of a token model's embedding (from its model.json); None for real inputs
    or when the checkpoint cannot be read."""
    if checkpoint is None or (isinstance(checkpoint, float) and math.isnan(checkpoint)) or checkpoint == "":
        return None
    try:
        from workers.checkpoint import read_meta

        spec = read_meta(checkpoint)["spec"]
    except Exception:  # a moved or remote checkpoint: the column stays empty
        return None
    if spec.get("input_kind") != "tokens":
        return None
    return int(spec["d_input"]) * int(spec["d_model"])


def latency_protocol(search: SearchLedger) -> str | None:
    """The latency protocol line of a search: device, threads, batch and length from its trials, the
    repeats and warm-up from its saved config; None when no trial recorded them."""
    from orchestrator.latency_noise import SHARED_CORES_NOTE, latency_protocol_line

    t = search.trials
    if t.empty or "latency_length" not in t or not t["latency_length"].notna().any():
        return None
    shared = any(bool(x) for x in (*t["latency_shared_cores"].dropna(), *search.stages["latency_shared_cores"].dropna()))
    row = t[t["latency_length"].notna()].iloc[0]
    repeats = warmup = None
    try:
        from orchestrator.search.folder import CONFIG_NAME
        from search_spaces.config import load_search_config

        cfg = load_search_config(search.folder / CONFIG_NAME)
        repeats, warmup = cfg.latency.repeats, cfg.latency.warmup
    except Exception:  # no saved config: the line says "?"
        pass
    return latency_protocol_line(device=row["latency_device"], threads=row["latency_threads"],
                                 batch=row["latency_batch"], length=row["latency_length"], repeats=repeats,
                                 warmup=warmup) + (f"; {SHARED_CORES_NOTE}" if shared else "")


def kept_matrix(search: SearchLedger) -> tuple[list[float], list[list[int]], int | None]:
    """(rates, kept count [layer][rate], channels H) from the completed stages' `kept` JSON."""
    rates, columns = [], []
    for stage in ledger.rows_of(search.stages.sort_values("rate"), ledger.StageRow):
        kept = stage.kept_channels
        if kept is None:
            continue
        rates.append(float(stage.rate))
        columns.append([len(layer) for layer in kept])
    if not columns:
        return [], [], None
    n_layers = max(len(c) for c in columns)
    matrix = [[c[i] if i < len(c) else 0 for c in columns] for i in range(n_layers)]
    dense = search.stages[search.stages["stage"] == 0]
    channels = None
    if not dense.empty and ledger.decode_kept(dense["kept"].iloc[0]):
        channels = max(len(layer) for layer in ledger.decode_kept(dense["kept"].iloc[0]))
    return rates, matrix, channels


def completed_trials(search: SearchLedger) -> pd.DataFrame:
    """Completed trials with a finite metric and latency (the Pareto plot's points)."""
    trials = search.trials
    if trials.empty:
        return trials
    ok = (trials["status"] == "completed") & trials["latency_p50_ms"].map(_finite)
    metric_col = "test_metric" if table_ii(search)["metric_source"].iloc[0] == "test" else "val_metric"
    ok &= trials[metric_col].map(_finite)
    out = trials[ok].copy()
    out["metric"] = out[metric_col].astype(float)
    return out.reset_index(drop=True)


def pareto_front(points: pd.DataFrame, *, metric: str = "metric", latency: str = "latency_p50_ms") -> pd.DataFrame:
    """Rows not dominated by another (higher-or-equal metric and lower-or-equal latency, one strictly)."""
    if points.empty:
        return points
    ordered = points.sort_values([latency, metric], ascending=[True, False])
    best, keep = -math.inf, []
    for index, row in ordered.iterrows():
        if float(row[metric]) > best:
            keep.append(index)
            best = float(row[metric])
    return ordered.loc[keep]


# ---- rendering ----------------------------------------------------------------------------------

def _fmt(value, spec: str) -> str:
    return format(float(value), spec) if _finite(value) else "-"


def _negated(value):
    return 0.0 - float(value) if _finite(value) else None  # 0.0 - x: no "-0.0" for the dense row


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """Table II as strings, the paper's way: metric in %, latency ms (change %, negative = faster), params (reduction %)."""
    metric_name = str(table["metric_name"].dropna().iloc[0]) if table["metric_name"].notna().any() else "metric"
    source = table["metric_source"].iloc[0] if len(table) else "val"
    head = f"{source} {metric_name} %"
    steps = "latency_step_ms" in table and table["latency_step_ms"].map(_finite).any()
    from orchestrator.latency_noise import latency_change_text

    dense = table[table["stage"] == 0]
    dense_p50 = dense["latency_ms"].iloc[0] if len(dense) else None
    dense_p90 = dense["latency_p90_ms"].iloc[0] if len(dense) else None
    rows = []
    for r in table.itertuples(index=False):
        # the paper's "(-65.0 %)": latency change, or "within noise" inside the p50-p90 spread
        latency_change = latency_change_text(_negated(r.speedup_pct), r.latency_ms, r.latency_p90_ms, dense_p50,
                                             dense_p90, dense=r.stage == 0)
        latency_change += "" if latency_change in ("-", "within noise") else " %"
        params_change = _fmt(_negated(r.param_reduction_pct), "+.1f")
        rows.append({
            "rate": f"{r.rate * 100:.0f} %",
            head: _fmt(r.metric * 100 if _finite(r.metric) else None, ".2f"),
            "latency ms (change)": f"{_fmt(r.latency_ms, '.2f')} ({latency_change})",
            **({"step latency ms": _fmt(r.latency_step_ms, ".3f")} if steps else {}),
            "params (reduction)": f"{int(r.params):,} ({params_change} %)" if _finite(r.params) else "-",
            "params w/o token embedding": f"{int(r.params_no_embedding):,}" if _finite(r.params_no_embedding) else "-",
            "seed": "-" if not _finite(r.best_seed) else str(int(r.best_seed)),
            "min / median / max %": " / ".join(_fmt(v * 100 if _finite(v) else None, ".2f")
                                               for v in (r.metric_min, r.metric_median, r.metric_max)),
            "trials (failed)": f"{_fmt(r.n_trials, '.0f')} ({_fmt(r.n_failed, '.0f')})",
        })
    return pd.DataFrame(rows)


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table of a string frame."""
    cells = [[str(c) for c in frame.columns]] + [[str(v) for v in row] for row in frame.itertuples(index=False)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(frame.columns))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells[1:]]
    return "\n".join(lines)


def write_table(table: pd.DataFrame, out_dir: str | os.PathLike, stem: str = "table_ii") -> list[Path]:
    """`<stem>.csv` and `<stem>.parquet` (raw numbers; kept_per_layer as JSON); returns the paths."""
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = table.copy()
    frame["kept_per_layer"] = frame["kept_per_layer"].map(lambda k: None if k is None else json.dumps(k))
    csv, parquet = out / f"{stem}.csv", out / f"{stem}.parquet"
    frame.to_csv(csv, index=False)
    frame.to_parquet(parquet, index=False)
    return [csv, parquet]
