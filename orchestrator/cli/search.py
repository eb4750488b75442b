"""`s4op search`: run a pruning search from a config; prints where its results are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

WORK_DIR_HELP = ("Folder for the local working copy of a search on s3:// or gs:// (the copy is <work-dir>/<name>) "
                 "[default: ~/.cache/s4op/work/<scheme>/<bucket>/<prefix>].")


def _ui_hint(search_dir: Path) -> str:
    from orchestrator.search.folder import read_meta
    from orchestrator.storage.work_copy import localise_meta
    from orchestrator.tracking.client import Tracker

    meta = localise_meta(read_meta(search_dir), search_dir)
    uri, experiment = meta["tracking_uri"], meta.get("experiment", meta["name"])
    if uri.startswith("sqlite:"):
        page = Tracker(uri).runs_page(experiment, "http://127.0.0.1:5000")
        return (f"open MLflow with:  mlflow ui --backend-store-uri {uri} --port 5000\n"
                f"then browse to the runs table:  {page or 'http://127.0.0.1:5000'}")
    return f"MLflow runs are at {Tracker(uri).runs_page(experiment) or uri}"


def print_result(search_dir: Path) -> None:
    from orchestrator.search import ledger
    from orchestrator.search.folder import read_meta

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
    from orchestrator.search.loop import start_search
    from search_spaces.config import load_search_config

    cfg = load_search_config(config, overrides)
    from orchestrator.search.provenance import cli_command

    search_dir = start_search(cfg, storage=storage, name=name, tracking_uri=tracking_uri, address=address,
                              allow_local_storage=allow_local_storage, work_dir=work_dir, command=cli_command())
    print_result(search_dir)


def register(app: typer.Typer) -> None:
    app.command("search")(search)
