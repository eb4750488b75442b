"""`s4op sync-mlflow`: replay a search's ledger and MLflow outbox into MLflow (idempotent)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def sync_mlflow(
    search_dir: Path = typer.Argument(..., help="The search folder (<storage>/<name>)."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri",
                                               help="MLflow URI to sync into; default: the search's own."),
) -> None:
    """Rebuild MLflow runs from the ledger and replay writes queued while MLflow was down."""
    from orchestrator.search.sync import sync_search

    report = sync_search(search_dir, tracking_uri=tracking_uri)
    print(report.summary())


def register(app: typer.Typer) -> None:
    app.command("sync-mlflow")(sync_mlflow)
