"""`s4op resume`: continue an interrupted search."""

from __future__ import annotations

from typing import List, Optional

import typer

from orchestrator.cli.search import WORK_DIR_HELP, print_result


def resume(
    search_dir: str = typer.Argument(..., help="The search folder (<storage>/<name>), or its s3:// / gs:// URI."),
    config: Optional[str] = typer.Option(None, "--config", help="Config to check against the stored one."),
    overrides: List[str] = typer.Option([], "--set", help="Override a config key (refused if it changes the search, unless --force)."),
    force: bool = typer.Option(False, "--force", help="Continue even if the config differs from the stored one."),
    address: str = typer.Option("local", "--address", help="Ray address: local (embedded), auto, or HOST:PORT."),
    break_lock: bool = typer.Option(False, "--break-lock", help="Take over the search's lock held by a driver on another host (e.g. a replaced head node)."),
    work_dir: Optional[str] = typer.Option(None, "--work-dir", help=WORK_DIR_HELP),
) -> None:
    """Continue an interrupted search: completed stages skipped, the interrupted stage restored."""
    from orchestrator.search.resume import resume_search

    done = resume_search(search_dir, config=config, overrides=overrides, force=force, address=address,
                         work_dir=work_dir, break_lock=break_lock)
    print_result(done)


def register(app: typer.Typer) -> None:
    app.command("resume")(resume)
