"""`s4op train CONFIG`: train a config's dense baseline and write its checkpoint.

CONFIG is a preset name (`s4op train cpu-listops-s4d`) or a YAML path. The checkpoint goes to
`--out` (default `s4op-runs/<name>-baseline`), the MLflow run to `--tracking-uri` (default: an
absolute sqlite file in that folder). A CPU preset whose data folder is missing generates it first.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        config: str = typer.Argument(..., help="Preset name (see search_spaces/presets) or YAML file."),
        out: Optional[Path] = typer.Option(None, "--out", help="Checkpoint folder [default: s4op-runs/<name>-baseline]."),
        tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking URI [default: sqlite file in --out]."),
        overrides: Optional[List[str]] = typer.Option(None, "--set", help="Override a config key: key.path=value (repeatable)."),
        epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Shorthand for --set baseline.train.epochs=N."),
        threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch CPU threads [default: torch's]."),
    ) -> None:
        """Train the dense baseline of CONFIG; print its metrics and checkpoint path."""
        from orchestrator.baseline import train_baseline
        from search_spaces.config import load_search_config

        items = list(overrides or [])
        if epochs is not None:
            items.append(f"baseline.train.epochs={epochs}")
        cfg = load_search_config(config, items)
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        target = out if out is not None else Path("s4op-runs") / f"{cfg.name}-baseline"
        train_baseline(cfg, target, tracking_uri=tracking_uri)
