"""`s4op report`: from a finished search to Table II + seed spread (Markdown, CSV + Parquet), plots and
one HTML page; logged to the search's MLflow run only when asked (`--log-to-mlflow`), and the
registry touched only when asked (`--register`, for searches made before the search registered its
models); `--compare` draws several searches.
Also where a search's stage checkpoints are found and verified (used by export).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from orchestrator.search import ledger
from search_spaces.errors import CheckpointError, ConfigError, SearchStateError


def _warn(message: str) -> None:
    print(f"s4op: warning: {message}", file=sys.stderr)


# ---- where things are -----------------------------------------------------------------------------

def _search_meta(folder: Path) -> dict:
    """search.json when there is one (a damaged one is a SearchStateError naming it), else {}."""
    from orchestrator.search.folder import SearchFolder

    return SearchFolder(folder).read_meta() if (folder / "search.json").exists() else {}


def tracking_uri_of(folder: Path, override: str | None = None) -> str | None:
    """--tracking-uri, else search.json's, else the default sqlite store if it exists, else None."""
    if override:
        return override
    from orchestrator.storage.work_copy import localise_meta

    uri = localise_meta(_search_meta(folder), folder).get("tracking_uri")  # an s3:// search: this copy's store
    if uri:
        return uri
    if (folder / "mlflow.db").is_file():
        from orchestrator.tracking.client import default_tracking_uri

        return default_tracking_uri(folder)
    return None


def _resolve_checkpoint(folder: Path, path: str | None) -> Path | None:
    if not path:
        return None
    if "://" in str(path):  # a search on an object store: the checkpoint, fetched into its working copy
        from orchestrator.storage.work_copy import local_checkpoint

        return local_checkpoint(folder, str(path))
    p = Path(path)
    if p.is_absolute():
        return p
    return folder / p if (folder / p).exists() else p


def parse_rate(rate: float) -> float:
    """--rate as a fraction: 0.5 or 50 (percent) both mean 50 %."""
    if not 0.0 <= rate <= 100.0:
        raise ConfigError(f"--rate: got {rate:g}, expected a fraction in [0, 1) or a percent in [1, 100)")
    return rate / 100.0 if rate >= 1.0 else rate


def stage_for_rate(search, rate: float) -> ledger.StageRow:
    """The completed stage row searched at `rate` (ConfigError naming the rates searched if none)."""
    stages = search.stages
    hit = stages[(stages["rate"] - rate).abs() < 1e-6]
    if hit.empty:
        have = ", ".join(f"{r:g}" for r in stages["rate"])
        raise ConfigError(f"--rate {rate:g}: not a completed stage of search {search.name!r} "
                          f"({search.folder}); expected one of {have}")
    return ledger.rows_of(hit.iloc[:1], ledger.StageRow)[0]


def verified_checkpoint(search, row: ledger.StageRow) -> Path:
    """The stage's checkpoint folder, after checking its sha256 against the ledger."""
    from workers.checkpoint import checkpoint_sha256

    folder = _resolve_checkpoint(search.folder, row.checkpoint)
    if folder is None:
        raise SearchStateError(f"{search.folder}/ledger/stages.parquet: stage {row.stage} has no checkpoint")
    actual = checkpoint_sha256(folder)  # CheckpointError if files are missing
    expected = row.checkpoint_sha256
    if expected and actual != expected:
        raise CheckpointError(f"checkpoint {folder}: sha256 {actual[:12]}... differs from the ledger's "
                              f"{str(expected)[:12]}... (stage {row.stage}); the files were altered or corrupted")
    return folder


# ---- report ----------------------------------------------------------------------------------------

def _labels(searches) -> list[str]:
    names = [s.name for s in searches]
    return [s.name if names.count(s.name) == 1 else f"{s.name} ({s.folder})" for s in searches]


def build_report(search_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                 compare: list[str | os.PathLike] = (), *, tracking_uri: str | None = None,
                 log_to_mlflow: bool = False, register: bool = False) -> dict:
    """Tables, plots and the HTML page of one search (plus `compare` searches on the same axes);
    `log_to_mlflow`: log the folder to the search run under `report/`; `register`: register each
    stage's best model (idempotent). Without them MLflow is not touched.

    Returns dict(markdown: {label: str}, files: [Path], mlflow_run_id: str | None, versions: {rate: version}).
    """
    from orchestrator.reports import plots
    from orchestrator.reports.table import (completed_trials, display_table, kept_matrix, latency_protocol,
                                            load_search, table_ii, to_markdown, write_table)
    from orchestrator.reports.html import render_report
    from orchestrator.tracking.report_run import log_report

    searches = [load_search(search_dir)] + [load_search(c) for c in compare]
    for folder in (search_dir, *compare):  # a damaged search.json is refused before anything is written
        if Path(folder).is_dir():
            _search_meta(Path(folder))
    labels = _labels(searches)
    answers = {label: target_answer_of(s.folder) for label, s in zip(labels, searches)}  # a bad config.yaml: before writing
    out = Path(out_dir) if out_dir is not None else Path(search_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    tables = {label: table_ii(s) for label, s in zip(labels, searches)}
    files = write_table(tables[labels[0]], out, "table_ii")
    if compare:
        import pandas as pd

        both = pd.concat([t.assign(label=label) for label, t in tables.items()], ignore_index=True)
        files += write_table(both, out, "table_ii_compare")
    protocols = {label: latency_protocol(s) for label, s in zip(labels, searches)}
    markdown = {label: to_markdown(display_table(t)) + (f"\n\n{protocols[label]}" if protocols[label] else "")
                for label, t in tables.items()}
    figures = [
        ("Metric vs pruning rate", plots.plot_metric_vs_rate(tables, out / "metric_vs_rate.png")),
        ("Latency vs pruning rate", plots.plot_latency_vs_rate(tables, out / "latency_vs_rate.png")),
        ("Pareto front: metric vs latency, all trials",
         plots.plot_pareto({label: completed_trials(s) for label, s in zip(labels, searches)}, out / "pareto.png",
                           plots.metric_label(tables))),
    ]
    for i, (label, s) in enumerate(zip(labels, searches)):
        rates, matrix, channels = kept_matrix(s)
        if matrix:
            name = "kept_heatmap.png" if i == 0 else f"kept_heatmap_{i}.png"
            figures.append((f"Kept channels per layer per rate: {label}",
                            plots.plot_kept_heatmap(rates, matrix, channels, out / name, title=f"Kept channels: {label}")))
    files += [path for _, path in figures]
    page = render_report(
        f"s4op report: {' vs '.join(labels)}",
        {f"Table II: {label}": display_table(t) for label, t in tables.items()},
        figures, out / "report.html",
        notes=[f"{label}: {s.folder.resolve()}" for label, s in zip(labels, searches)]
        + [f"{label}: {p}" for label, p in protocols.items() if p]
        + [f"{label}: {text}" for label, text in answers.items() if text])
    files.append(page)
    run_id, versions = None, {}
    first = searches[0]
    uri = tracking_uri_of(first.folder, tracking_uri) if (log_to_mlflow or register) else None
    if log_to_mlflow:
        stage0 = first.stages[first.stages["stage"] == 0]
        run_id = log_report(first.folder, first.name, out, uri, warn=_warn,
                            experiment=_search_meta(first.folder).get("experiment", first.name),
                            stage0_run_id=(stage0["mlflow_run_id"].iloc[0] or None) if not stage0.empty else None)
    if register:
        if uri is None:
            _warn(f"no MLflow store for {first.folder}; nothing registered")
        else:
            versions = register_search(first, uri)
    return {"markdown": markdown, "files": files, "mlflow_run_id": run_id, "out": out, "versions": versions,
            "name": searches[0].name, "target": answers[labels[0]]}


def target_answer_of(folder: Path) -> str | None:
    """The search's answer to its `search.target` (None without one or without a config)."""
    from orchestrator.search.folder import CONFIG_NAME
    from orchestrator.search.target_plan import target_answer
    from search_spaces.config import load_search_config

    if not (Path(folder) / CONFIG_NAME).exists():
        return None
    answer = target_answer(load_search_config(Path(folder) / CONFIG_NAME), folder)
    return None if answer is None else answer.text


def register_search(search, tracking_uri: str) -> dict[float, str]:
    """Register every completed stage's best model (idempotent: the driver may have done it already),
    linked to its winning trial's run (stage 0: the stage's run) and tagged with its figures.

    Returns {rate: version}; a stage whose checkpoint is missing or altered is skipped with a warning.
    """
    from orchestrator.tracking import ledger_view as view
    from orchestrator.tracking.registry import register_stage_best
    from orchestrator.tracking.report_run import quick_http

    versions = {}
    trials = search.trials
    for row in ledger.rows_of(search.stages[search.stages["status"] == "completed"], ledger.StageRow):
        try:
            folder = verified_checkpoint(search, row)
            best = trials[(trials["stage"] == row.stage) & (trials["trial_id"] == row.best_trial_id)]
            run_id = (best["mlflow_run_id"].iloc[0] if not best.empty else None) or row.mlflow_run_id
            name = view.trial_run_name(row.rate, row.best_trial_id) if row.stage > 0 and row.best_trial_id else None
            with quick_http():
                versions[row.rate] = register_stage_best(
                    tracking_uri, search.name, row.stage, row.rate, folder, run_id, tags=view.version_tags(row),
                    description=view.version_description(search.name, row, name))
        except Exception as exc:  # noqa: BLE001 - the registry is a view; the report is written
            _warn(f"model registry: stage {row.stage} (rate {row.rate:g}) not registered: "
                  f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    return versions


