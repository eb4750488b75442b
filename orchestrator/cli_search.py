"""`s4op search`, `s4op resume`, `s4op status`: run, continue and inspect a pruning search."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

WORK_DIR_HELP = ("Folder for the local working copy of a search on s3:// or gs:// (the copy is <work-dir>/<name>) "
                 "[default: ~/.cache/s4op/work/<scheme>/<bucket>/<prefix>].")


def _ui_hint(search_dir: Path) -> str:
    from orchestrator.driver import read_meta
    from orchestrator.remote import localise_meta

    uri = localise_meta(read_meta(search_dir), search_dir)["tracking_uri"]
    if uri.startswith("sqlite:"):
        return f"open MLflow with:  mlflow ui --backend-store-uri {uri}"
    return f"MLflow runs are at {uri}"


def _print_result(search_dir: Path) -> None:
    from orchestrator import ledger
    from orchestrator.driver import read_meta

    uri = read_meta(search_dir).get("search_uri")
    if uri:
        print(f"search finished: {uri} (local working copy {search_dir})")
    else:
        print(f"search finished: {search_dir}")
    print(f"ledger: {ledger.trials_path(search_dir)} and {ledger.stages_path(search_dir)}")
    print(_ui_hint(search_dir))


def search(
    config: str = typer.Argument(..., help="Preset name (e.g. cpu-listops-s4d) or YAML config path."),
    name: Optional[str] = typer.Option(None, "--name", help="Search name (folder under --storage); default: the config's name."),
    storage: str = typer.Option("s4op-runs", "--storage", help="Folder holding search folders, or an s3:// / gs:// URI."),
    address: str = typer.Option("local", "--address", help="Ray address: local (embedded), auto, or HOST:PORT."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow URI; default sqlite:///<search>/mlflow.db."),
    overrides: List[str] = typer.Option([], "--set", help="Override a config key: key.path=value (repeatable)."),
    allow_local_storage: bool = typer.Option(False, "--allow-local-storage", help="Accept a node-local --storage on a multi-node cluster (it is a shared mount)."),
    work_dir: Optional[str] = typer.Option(None, "--work-dir", help=WORK_DIR_HELP),
) -> None:
    """Run a staged pruning search (stage 0 baseline, then one Tune stage per rate)."""
    from orchestrator.driver import start_search
    from search_spaces.config import load_search_config

    cfg = load_search_config(config, overrides)
    search_dir = start_search(cfg, storage=storage, name=name, tracking_uri=tracking_uri, address=address,
                              allow_local_storage=allow_local_storage, work_dir=work_dir)
    _print_result(search_dir)


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
    from orchestrator.resume import resume_search

    done = resume_search(search_dir, config=config, overrides=overrides, force=force, address=address,
                         work_dir=work_dir, break_lock=break_lock)
    _print_result(done)


def status(
    search_dir: str = typer.Argument(..., help="The search folder (<storage>/<name>), or its s3:// / gs:// URI."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    work_dir: Optional[str] = typer.Option(None, "--work-dir", help=WORK_DIR_HELP),
) -> None:
    """Stages done, trials, best so far, what is left, disk used."""
    from orchestrator.status import format_status, search_status

    st = search_status(search_dir, work_dir=work_dir)
    print(json.dumps(st, indent=1, default=str) if as_json else format_status(st))


def register(app: typer.Typer) -> None:
    app.command("search")(search)
    app.command("resume")(resume)
    app.command("status")(status)
