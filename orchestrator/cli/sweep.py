"""`s4op sweep SWEEP.yaml` (also `sweep run`), `s4op sweep resume DIR`, `s4op sweep status DIR`,
`s4op sweep report DIR`: several searches at once on one cluster, sharing their baselines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

ADDRESS_HELP = "Ray address: local (a Ray embedded in the sweep driver), auto, or HOST:PORT."
SHARED_HELP = "Accept a node-local --storage on a multi-node cluster (it is a mount every node shares)."


class _RunByDefault(TyperGroup):
    """`s4op sweep SWEEP.yaml` means `s4op sweep run SWEEP.yaml`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


sweep_app = typer.Typer(cls=_RunByDefault, no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                        help="Run several searches at once on one Ray cluster (SWEEP.yaml: a grid or list of "
                             "configs), each distinct baseline trained once and shared.")


@sweep_app.command("run")
def run(
    sweep_file: Path = typer.Argument(..., help="The sweep file (YAML: name, base, set, grid and/or searches)."),
    storage: str = typer.Option("s4op-runs", "--storage", help="Folder holding the sweep folder <storage>/<name>."),
    address: str = typer.Option("local", "--address", help=ADDRESS_HELP),
    allow_local_storage: bool = typer.Option(False, "--allow-local-storage", help=SHARED_HELP),
) -> None:
    """Create the sweep (or find it, unchanged) and run every unfinished search to its end."""
    import shutil

    from orchestrator.sweep.create import create_sweep
    from orchestrator.sweep.run import SweepRefused, run_sweep

    before = {p.resolve() for p in Path(storage).iterdir()} if "://" not in storage and Path(storage).is_dir() else set()
    sweep_dir = create_sweep(sweep_file, storage=storage)
    try:
        run_sweep(sweep_dir, address=address, allow_local_storage=allow_local_storage)
    except SweepRefused:  # refused before anything ran: a folder made just now is not left behind
        if Path(sweep_dir).resolve() not in before:
            shutil.rmtree(sweep_dir, ignore_errors=True)
        raise
    typer.echo(f"sweep finished: {sweep_dir}\ncompare the searches with:  s4op sweep report {sweep_dir}")


@sweep_app.command("resume")
def resume(
    sweep_dir: Path = typer.Argument(..., help="The sweep folder (<storage>/<name>)."),
    address: str = typer.Option("local", "--address", help=ADDRESS_HELP),
    allow_local_storage: bool = typer.Option(False, "--allow-local-storage", help=SHARED_HELP),
) -> None:
    """Continue an interrupted sweep: finished searches untouched, the others resumed or started."""
    from orchestrator.sweep.run import resume_sweep

    done = resume_sweep(sweep_dir, address=address, allow_local_storage=allow_local_storage)
    typer.echo(f"sweep finished: {done}\ncompare the searches with:  s4op sweep report {done}")


@sweep_app.command("status")
def status(
    sweep_dir: Path = typer.Argument(..., help="The sweep folder (<storage>/<name>)."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Each search's state and stages, each shared baseline's training."""
    from orchestrator.sweep.status import format_sweep_status, sweep_status

    st = sweep_status(sweep_dir)
    typer.echo(json.dumps(st, indent=1, default=str) if as_json else format_sweep_status(st))


@sweep_app.command("report")
def report(
    sweep_dir: Path = typer.Argument(..., help="The sweep folder (<storage>/<name>)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder [default: <sweep-dir>/report]."),
) -> None:
    """One comparison of every search's selected model per rate (table, plots, HTML)."""
    from orchestrator.sweep.report import sweep_report

    result = sweep_report(sweep_dir, out)
    typer.echo(result["table"])
    typer.echo(f"wrote {len(result['files'])} files to {result['out']} (report.html)")


def register(app: typer.Typer) -> None:
    app.add_typer(sweep_app, name="sweep")
