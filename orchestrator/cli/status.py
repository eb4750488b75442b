"""`s4op status`: where a search stands."""

from __future__ import annotations

import json
from typing import Optional

import typer

from orchestrator.cli.search import WORK_DIR_HELP


def status(
    search_dir: str = typer.Argument(..., help="The search folder (<storage>/<name>), or its s3:// / gs:// URI."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    work_dir: Optional[str] = typer.Option(None, "--work-dir", help=WORK_DIR_HELP),
) -> None:
    """Stages done, trials, best so far, what is left, disk used."""
    from orchestrator.search.status import format_status, search_status

    st = search_status(search_dir, work_dir=work_dir)
    print(json.dumps(st, indent=1, default=str) if as_json else format_status(st))


def register(app: typer.Typer) -> None:
    app.command("status")(status)
