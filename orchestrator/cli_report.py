"""`s4op report`, `s4op ablate-layers` and `s4op export`: from a finished search to tables, plots
and deployable files.

report:        Table II + seed spread (Markdown on the console, CSV + Parquet), plots, one HTML page,
               all logged to the search's MLflow parent run; `--compare` draws several searches.
ablate-layers: Table I of a checkpoint (each layer's SSM operators off in turn, no fine-tuning).
export:        the selected model of one rate as safetensors / ONNX / TorchScript at a fixed batch
               and length (or its S4D step model with --streaming), checked against eager PyTorch.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional

import typer

from search_spaces.errors import CheckpointError, ConfigError, S4opError, SearchStateError

EXPORT_TOLERANCE = 1e-4


def _warn(message: str) -> None:
    print(f"s4op: warning: {message}", file=sys.stderr)


# ---- where things are -----------------------------------------------------------------------------

def _search_meta(folder: Path) -> dict:
    try:
        return json.loads((folder / "search.json").read_text())
    except (OSError, ValueError):
        return {}


def tracking_uri_of(folder: Path, override: str | None = None) -> str | None:
    """--tracking-uri, else search.json's, else the default sqlite store if it exists, else None."""
    if override:
        return override
    from orchestrator.remote import localise_meta

    uri = localise_meta(_search_meta(folder), folder).get("tracking_uri")  # an s3:// search: this copy's store
    if uri:
        return uri
    if (folder / "mlflow.db").is_file():
        from orchestrator.tracking import default_tracking_uri

        return default_tracking_uri(folder)
    return None


def _resolve_checkpoint(folder: Path, path: str | None) -> Path | None:
    if not path:
        return None
    if "://" in str(path):  # a search on an object store: the checkpoint, fetched into its working copy
        from orchestrator.remote import local_checkpoint

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


def stage_for_rate(search, rate: float) -> dict:
    """The completed stage row searched at `rate` (ConfigError naming the rates searched if none)."""
    stages = search.stages
    hit = stages[(stages["rate"] - rate).abs() < 1e-6]
    if hit.empty:
        have = ", ".join(f"{r:g}" for r in stages["rate"])
        raise ConfigError(f"--rate {rate:g}: not a completed stage of search {search.name!r} "
                          f"({search.folder}); expected one of {have}")
    return hit.iloc[0].to_dict()


def verified_checkpoint(search, row: dict) -> Path:
    """The stage's checkpoint folder, after checking its sha256 against the ledger."""
    from workers.checkpoint import checkpoint_sha256

    folder = _resolve_checkpoint(search.folder, row.get("checkpoint"))
    if folder is None:
        raise SearchStateError(f"{search.folder}/ledger/stages.parquet: stage {row['stage']} has no checkpoint")
    actual = checkpoint_sha256(folder)  # CheckpointError if files are missing
    expected = row.get("checkpoint_sha256")
    if expected and actual != expected:
        raise CheckpointError(f"checkpoint {folder}: sha256 {actual[:12]}... differs from the ledger's "
                              f"{str(expected)[:12]}... (stage {row['stage']}); the files were altered or corrupted")
    return folder


# ---- report ----------------------------------------------------------------------------------------

def _labels(searches) -> list[str]:
    names = [s.name for s in searches]
    return [s.name if names.count(s.name) == 1 else f"{s.name} ({s.folder})" for s in searches]


def build_report(search_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                 compare: list[str | os.PathLike] = (), *, tracking_uri: str | None = None,
                 log_to_mlflow: bool = True) -> dict:
    """Tables, plots and the HTML page of one search (plus `compare` searches on the same axes).

    Returns dict(markdown: {label: str}, files: [Path], mlflow_run_id: str | None).
    """
    from orchestrator import plots
    from orchestrator.report import (completed_trials, display_table, kept_matrix, latency_protocol, load_search,
                                     table_ii, to_markdown, write_table)
    from orchestrator.report_html import render_report

    searches = [load_search(search_dir)] + [load_search(c) for c in compare]
    labels = _labels(searches)
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
        + [f"{label}: {p}" for label, p in protocols.items() if p])
    files.append(page)
    run_id, versions = None, {}
    if log_to_mlflow:
        uri = tracking_uri_of(searches[0].folder, tracking_uri)
        run_id = log_report(searches[0], out, uri)
        if run_id is not None:
            versions = register_search(searches[0], uri)
    return {"markdown": markdown, "files": files, "mlflow_run_id": run_id, "out": out, "versions": versions,
            "name": searches[0].name}


def register_search(search, tracking_uri: str) -> dict[float, str]:
    """Register every completed stage's best model (idempotent: the driver may have done it already).

    Returns {rate: version}; a stage whose checkpoint is missing or altered is skipped with a warning.
    """
    from orchestrator.registry import register_stage_best

    versions = {}
    for row in search.stages.to_dict("records"):
        try:
            folder = verified_checkpoint(search, row)
            with _quick_http():
                versions[float(row["rate"])] = register_stage_best(
                    tracking_uri, search.name, int(row["stage"]), float(row["rate"]), folder,
                    row.get("mlflow_run_id") or None)
        except Exception as exc:  # noqa: BLE001 - the registry is a view; the report is written
            _warn(f"model registry: stage {row['stage']} (rate {row['rate']:g}) not registered: "
                  f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    return versions


@contextmanager
def _quick_http():
    """Fail fast when an http tracking server is unreachable: no retries, short timeout."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "10"
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def parent_run_id(client, search) -> str | None:
    """The search's parent run: tag `s4op.key = <name>`, else the parent of the stage-0 run."""
    meta = _search_meta(search.folder)
    experiment = client.get_experiment_by_name(meta.get("experiment", search.name))
    ids = [experiment.experiment_id] if experiment else [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids, filter_string=f"tags.`s4op.key` = '{search.name}'", max_results=5)
    if runs:
        return sorted(runs, key=lambda r: r.info.start_time or 0)[0].info.run_id
    stage0 = search.stages[search.stages["stage"] == 0]
    run0 = stage0["mlflow_run_id"].iloc[0] if not stage0.empty else None
    if run0:
        run = client.get_run(run0)
        return run.data.tags.get("mlflow.parentRunId") or run0
    return None


def log_report(search, out: Path, tracking_uri: str | None) -> str | None:
    """Log the report folder to the search's MLflow parent run under `report/`; warn on failure."""
    if tracking_uri is None:
        _warn(f"no MLflow store for {search.folder} (no search.json tracking URI, no mlflow.db); report not logged")
        return None
    try:
        from mlflow import MlflowClient

        with _quick_http():
            client = MlflowClient(tracking_uri=tracking_uri)
            run_id = parent_run_id(client, search)
            if run_id is None:
                _warn(f"MLflow {tracking_uri}: no run tagged s4op.key = {search.name!r}; report not logged")
                return None
            client.log_artifacts(run_id, str(out), "report")
            return run_id
    except Exception as exc:  # noqa: BLE001 - MLflow is a view; the files are written already
        _warn(f"MLflow {tracking_uri} unreachable or refused the report ({type(exc).__name__}: "
              f"{str(exc).splitlines()[0] if str(exc) else ''}); report not logged")
        return None


# ---- ablation --------------------------------------------------------------------------------------

def _config_near(checkpoint: Path):
    """The search config.yaml of a checkpoint inside a search folder, or None."""
    for folder in [checkpoint, *checkpoint.resolve().parents][:6]:
        if (folder / "config.yaml").is_file() and (folder / "ledger").is_dir():
            from search_spaces.config import load_search_config

            return load_search_config(folder / "config.yaml")
    return None


def run_ablation(checkpoint: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
                 out_dir: str | os.PathLike | None = None, max_len: int | None = None,
                 batch_size: int = 64, val_fraction: float | None = None) -> dict:
    """Table I of a checkpoint on its task's validation split; writes CSV + bar plot (PNG)."""
    from orchestrator.ablation import ablate_layers, display_ablation
    from orchestrator.plots import plot_ablation
    from orchestrator.report import to_markdown
    from workers.checkpoint import load_checkpoint
    from workers.data import load_task

    checkpoint = Path(checkpoint)
    model, meta = load_checkpoint(checkpoint)
    cfg = _config_near(checkpoint)
    task = meta.get("task") or (cfg.task.name if cfg else None)
    if task is None:
        raise CheckpointError(f"{checkpoint}/model.json: no task recorded; expected a checkpoint saved with its task")
    if data_dir is None and cfg is not None:
        data_dir = cfg.task.data_dir
    if data_dir is None:
        raise ConfigError(f"ablate-layers {checkpoint}: no --data given and no search config.yaml above the "
                          "checkpoint; expected --data DIR")
    if max_len is None and cfg is not None:
        max_len = cfg.task.max_len
    if val_fraction is None:
        val_fraction = cfg.task.val_fraction if cfg is not None else 0.2
    splits = load_task(task, data_dir, max_len=max_len, val_fraction=val_fraction)
    table = ablate_layers(model, splits.val, splits.info, batch_size=batch_size)
    out = Path(out_dir) if out_dir is not None else checkpoint / "ablation"
    files = _write_ablation(table, out)
    files.append(plot_ablation(table, out / "ablation.png"))
    return {"table": table, "markdown": to_markdown(display_ablation(table)), "files": files, "out": out}


def _write_ablation(table, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    csv, parquet = out / "table_i.csv", out / "table_i.parquet"
    table.to_csv(csv, index=False)
    table.to_parquet(parquet, index=False)
    return [csv, parquet]


# ---- export ----------------------------------------------------------------------------------------

def _default_length(search, row: dict) -> int | None:
    trials = search.trials
    if not trials.empty:
        hit = trials[(trials["stage"] == row["stage"]) & trials["latency_length"].notna()]
        best = hit[hit["trial_id"] == row.get("best_trial_id")]
        for frame in (best, hit, trials[trials["latency_length"].notna()]):
            if not frame.empty:
                return int(frame["latency_length"].iloc[0])
    cfg = _config_near(search.folder)
    return int(cfg.task.max_len) if cfg is not None and cfg.task.max_len else None


def export_search(search_dir: str | os.PathLike, rate: float, fmt: str, out: str | os.PathLike, *,
                  batch: int = 1, length: int | None = None, streaming: bool = False, threads: int = 1,
                  repeats: int = 30, warmup: int = 5, form: str = "auto") -> dict:
    """Export the selected model of `rate`; check it against eager PyTorch; time ONNX/TorchScript.

    Writes `out` and `out`.json (the record: source stage, checkpoint hash, shapes, max |diff|,
    latencies). Raises S4opError (nothing left behind) if the check exceeds 1e-4.
    """
    import torch

    from orchestrator.report import load_search
    from workers import export as ex
    from workers.checkpoint import load_checkpoint
    from workers.latency import measure_latency

    if fmt not in ex.FORMATS:
        raise ConfigError(f"--format: got {fmt!r}, expected one of {', '.join(ex.FORMATS)}")
    if batch < 1:
        raise ConfigError(f"--batch: got {batch}, expected a positive integer")
    search = load_search(search_dir)
    rate = parse_rate(rate)
    row = stage_for_rate(search, rate)
    folder = verified_checkpoint(search, row)
    model, _ = load_checkpoint(folder)
    if length is None:
        length = _default_length(search, row)
        if length is None:
            raise ConfigError(f"export: no sequence length recorded for stage {row['stage']} of {search.folder}; "
                              "expected --length L")
    if length < 1:
        raise ConfigError(f"--length: got {length}, expected a positive integer")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        module = ex.streaming(model) if streaming else ex.deployable(model, length, form)
        inputs = ex.module_inputs(module, model, batch, length)
        record = {"search": search.name, "stage": int(row["stage"]), "rate": float(row["rate"]), "format": fmt,
                  "batch": batch, "checkpoint": str(folder), "checkpoint_sha256": row.get("checkpoint_sha256"),
                  **ex.describe(model, module)}
        out = Path(out)
        path = ex.write_export(module, inputs, fmt, out, record)
        try:
            diff = ex.max_abs_diff(path, fmt, model, module, inputs)
            if not diff <= EXPORT_TOLERANCE:
                raise S4opError(f"export check: {fmt} output differs from PyTorch by {diff:.3g} > "
                                f"{EXPORT_TOLERANCE:g}; nothing written")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        record["max_abs_diff"] = diff
        if fmt in ("onnx", "torchscript"):
            record["latency"] = {fmt: {**ex.time_callable(ex.run_exported(path, fmt, module, inputs, threads),
                                                          repeats=repeats, warmup=warmup), "threads": threads}}
            if not streaming:
                eager = measure_latency(model, (inputs[0],), repeats=repeats, warmup=warmup, threads=threads)
                record["latency"]["pytorch_eager"] = {k: eager[k] for k in ("p50_ms", "p90_ms", "mean_ms", "repeats", "threads")}
    finally:
        torch.set_num_threads(old_threads)
    Path(f"{out}.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record


# ---- commands --------------------------------------------------------------------------------------

def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        search_dir: str = typer.Argument(..., help="Search folder (<storage>/<name>), or its s3:// / gs:// URI."),
        out: Optional[Path] = typer.Option(None, "--out", help="Output folder [default: <search-dir>/report]."),
        compare: Optional[List[str]] = typer.Option(None, "--compare", help="Another search folder or URI to draw on the same axes (repeatable)."),
        tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow URI [default: the search's]."),
        no_mlflow: bool = typer.Option(False, "--no-mlflow", help="Do not log the report to MLflow."),
        work_dir: Optional[str] = typer.Option(None, "--work-dir", help="Folder for the local working copy of a search on s3:// or gs:// [default: ~/.cache/s4op/work/...]."),
    ) -> None:
        """Table II (metric, latency + speedup, params + reduction, seed spread), plots and HTML."""
        from orchestrator.remote import open_search

        search_dir = open_search(search_dir, work_dir=work_dir, what="report")[0]
        compare = [open_search(c, work_dir=work_dir, what="report")[0] for c in (compare or [])]
        result = build_report(search_dir, out, compare, tracking_uri=tracking_uri,
                              log_to_mlflow=not no_mlflow)
        for label, md in result["markdown"].items():
            typer.echo(f"\n## {label}\n\n{md}\n")
        typer.echo(f"wrote {len(result['files'])} files to {result['out']} (report.html)")
        if result["mlflow_run_id"]:
            typer.echo(f"logged to MLflow run {result['mlflow_run_id']} under report/")
        if result["versions"]:
            from orchestrator.registry import rate_alias, registered_model_name

            name = registered_model_name(result["name"])
            typer.echo(f"registered model {name}: " + ", ".join(
                f"{rate_alias(r)} = v{v}" for r, v in sorted(result["versions"].items())))

    @app.command("ablate-layers")
    def ablate(
        checkpoint: Path = typer.Argument(..., help="Checkpoint folder (model.json + model.safetensors)."),
        data: Optional[Path] = typer.Option(None, "--data", help="Task data folder [default: from the search config]."),
        out: Optional[Path] = typer.Option(None, "--out", help="Output folder [default: <checkpoint>/ablation]."),
        max_len: Optional[int] = typer.Option(None, "--max-len", min=1, help="Sequence length cap [default: the config's]."),
        batch_size: int = typer.Option(64, "--batch-size", min=1),
    ) -> None:
        """Table I: each layer's SSM operators deactivated in turn, validation metric, no fine-tuning."""
        result = run_ablation(checkpoint, data_dir=data, out_dir=out, max_len=max_len, batch_size=batch_size)
        typer.echo(result["markdown"])
        typer.echo(f"wrote {', '.join(p.name for p in result['files'])} to {result['out']}")

    @app.command("export")
    def export(
        search_dir: str = typer.Argument(..., help="Search folder (<storage>/<name>), or its s3:// / gs:// URI."),
        rate: float = typer.Option(..., "--rate", help="Pruning rate of the stage to export: 0.5 or 50."),
        fmt: str = typer.Option("onnx", "--format", help="safetensors | onnx | torchscript."),
        out: Path = typer.Option(..., "--out", help="Output file."),
        batch: int = typer.Option(1, "--batch", min=1, help="Fixed batch size."),
        length: Optional[int] = typer.Option(None, "--length", min=1, help="Fixed sequence length [default: the latency length]."),
        streaming: bool = typer.Option(False, "--streaming", help="Export the S4D step (recurrent) model."),
        threads: int = typer.Option(1, "--threads", min=1, help="Threads for the check and the latency."),
        form: str = typer.Option("auto", "--form", help="Convolution form: auto (scan for unidirectional S4D, "
                                 "else fft) | fft (cached kernel spectrum, DFT) | scan (chunked S4D scan, matmuls)."),
    ) -> None:
        """The selected model of one rate, compacted and kernel-cached, checked against PyTorch."""
        from orchestrator.remote import open_search

        search_dir = open_search(search_dir, what="report")[0]
        record = export_search(search_dir, rate, fmt, out, batch=batch, length=length, streaming=streaming,
                               threads=threads, form=form)
        shape = f"batch {record['batch']}" + ("" if streaming else f", length {record['length']}")
        typer.echo(f"exported stage {record['stage']} (rate {record['rate']:g}) as {fmt} "
                   f"{record['form']} form ({shape}) to {out}; max |diff| vs PyTorch "
                   f"{record['max_abs_diff']:.2e}")
        for name, lat in record.get("latency", {}).items():
            typer.echo(f"  {name}: p50 {lat['p50_ms']:.3f} ms, p90 {lat['p90_ms']:.3f} ms "
                       f"({lat['repeats']} runs, {lat['threads']} thread(s))")
