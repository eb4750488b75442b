"""`s4op report`, `s4op ablate-layers`, `s4op export`: tables, plots and deployable files of a search."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        search_dir: str = typer.Argument(..., help="Search folder (<storage>/<name>), or its s3:// / gs:// URI."),
        out: Optional[Path] = typer.Option(None, "--out", help="Output folder [default: <search-dir>/report]."),
        compare: Optional[List[str]] = typer.Option(None, "--compare", help="Another search folder or URI to draw on the same axes (repeatable)."),
        tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow URI [default: the search's]."),
        log_to_mlflow: bool = typer.Option(False, "--log-to-mlflow", help="Also log the report folder to the search's MLflow run (under report/)."),
        register: bool = typer.Option(False, "--register", help="Register each rate's best model in the MLflow model registry (searches made before the search did it)."),
        work_dir: Optional[str] = typer.Option(None, "--work-dir", help="Folder for the local working copy of a search on s3:// or gs:// [default: ~/.cache/s4op/work/...]."),
    ) -> None:
        """Table II (metric, latency + speedup, params + reduction, seed spread), plots and HTML."""
        from orchestrator.storage.work_copy import open_search
        from orchestrator.sweep.folder import SweepFolder

        if SweepFolder(search_dir).is_sweep() and not compare:  # a sweep folder: its searches compared
            from orchestrator.cli.sweep import report as sweep_report

            return sweep_report(Path(search_dir), out)

        search_dir = open_search(search_dir, work_dir=work_dir, what="report")[0]
        compare = [open_search(c, work_dir=work_dir, what="report")[0] for c in (compare or [])]
        from orchestrator.reports.pipeline import build_report

        result = build_report(search_dir, out, compare, tracking_uri=tracking_uri,
                              log_to_mlflow=log_to_mlflow, register=register)
        for label, md in result["markdown"].items():
            typer.echo(f"\n## {label}\n\n{md}\n")
        if result.get("target"):
            typer.echo(f"target: {result['target']}")
        typer.echo(f"wrote {len(result['files'])} files to {result['out']} (report.html)")
        if result["mlflow_run_id"]:
            typer.echo(f"logged to MLflow run {result['mlflow_run_id']} under report/")
        if result["versions"]:
            from orchestrator.tracking.registry import rate_alias, registered_model_name

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
        from orchestrator.reports.ablation import run_ablation

        result = run_ablation(checkpoint, data_dir=data, out_dir=out, max_len=max_len, batch_size=batch_size)
        typer.echo(result["markdown"])
        typer.echo(f"wrote {', '.join(p.name for p in result['files'])} to {result['out']}")

    @app.command("export")
    def export(
        search_dir: Optional[str] = typer.Argument(None, help="Search folder (<storage>/<name>), or its s3:// / gs:// URI."),
        rate: Optional[float] = typer.Option(None, "--rate", help="Pruning rate of the stage to export: 0.5 or 50."),
        from_checkpoint: Optional[Path] = typer.Option(None, "--from-checkpoint", help="Export this checkpoint "
                                                       "folder (e.g. from s4op import) instead of a search's stage."),
        fmt: str = typer.Option("onnx", "--format", help="safetensors | onnx | torchscript | state-spaces."),
        out: Path = typer.Option(..., "--out", help="Output file."),
        batch: int = typer.Option(1, "--batch", min=1, help="Fixed batch size."),
        length: Optional[int] = typer.Option(None, "--length", min=1, help="Fixed sequence length [default: the latency length]."),
        streaming: bool = typer.Option(False, "--streaming", help="Export the S4D step (recurrent) model."),
        threads: int = typer.Option(1, "--threads", min=1, help="Threads for the check and the latency."),
        form: str = typer.Option("auto", "--form", help="Convolution form: auto (scan for unidirectional S4D, "
                                 "else fft) | fft (cached kernel spectrum, DFT) | scan (chunked S4D scan, matmuls)."),
    ) -> None:
        """The selected model of one rate (or a checkpoint folder), compacted and kernel-cached, checked against PyTorch."""
        from orchestrator.reports.export import STATE_SPACES, export_checkpoint, export_search
        from orchestrator.storage.work_copy import open_search
        from search_spaces.errors import ConfigError

        if (from_checkpoint is None) == (search_dir is None) or (search_dir is not None and rate is None):
            raise ConfigError("export: expected SEARCH_DIR --rate R, or --from-checkpoint DIR")
        if from_checkpoint is not None:
            record = export_checkpoint(from_checkpoint, fmt, out, batch=batch, length=length, streaming=streaming,
                                       threads=threads, form=form)
        else:
            search_dir = open_search(search_dir, what="report")[0]
            record = export_search(search_dir, rate, fmt, out, batch=batch, length=length, streaming=streaming,
                                   threads=threads, form=form)
        if fmt == STATE_SPACES:
            typer.echo(f"wrote a {record['layout']['layer']} state dict to {out} (constructor arguments in {out}.json)")
            return
        shape = f"batch {record['batch']}" + ("" if streaming else f", length {record['length']}")
        what = f"stage {record['stage']} (rate {record['rate']:g})" if "stage" in record else str(from_checkpoint)
        typer.echo(f"exported {what} as {fmt} "
                   f"{record['form']} form ({shape}) to {out}; max |diff| vs PyTorch "
                   f"{record['max_abs_diff']:.2e}")
        for name, lat in record.get("latency", {}).items():
            typer.echo(f"  {name}: p50 {lat['p50_ms']:.3f} ms, p90 {lat['p90_ms']:.3f} ms "
                       f"({lat['repeats']} runs, {lat['threads']} thread(s))")
