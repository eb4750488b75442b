"""`s4op import CHECKPOINT --from state-spaces --out DIR`: a model trained with the S4 authors' code
(their example.py layout) as an s4op checkpoint folder that `s4op search` prunes.

    s4op import model.pt --from state-spaces --out DIR [--prenorm] [--input tokens|real]
                [--disc zoh|bilinear] [--task-config CONFIG] [--set key=value ...]

The logic lives in `workers.interop.importer`; this file only parses flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

SOURCES = ("state-spaces",)


def register(app: typer.Typer) -> None:
    @app.command("import")
    def import_(
        checkpoint: Path = typer.Argument(..., help="torch.save(model.state_dict()) file (or example.py's ckpt.pth)."),
        source: str = typer.Option(..., "--from", help="Layout of the file: state-spaces (example.py of state-spaces/s4)."),
        out: Path = typer.Option(..., "--out", help="New checkpoint folder to write."),
        prenorm: bool = typer.Option(False, "--prenorm", help="The model was built with prenorm=True (default post-norm)."),
        input_kind: Optional[str] = typer.Option(None, "--input", help="tokens | real, when the encoder shape is ambiguous."),
        disc: str = typer.Option("zoh", "--disc", help="Discretisation of S4Block diag kernels: zoh | bilinear."),
        task_config: Optional[str] = typer.Option(None, "--task-config", help="Preset or YAML: check the model against "
                                                  "its data, score it and check the norm placement."),
        overrides: Optional[List[str]] = typer.Option(None, "--set", help="Override a key of --task-config."),
    ) -> None:
        """Turn an example.py state dict (S4D or S4Block layers) into an s4op checkpoint folder."""
        from search_spaces.errors import ConfigError
        from workers.interop.importer import import_state_spaces

        if source not in SOURCES:
            raise ConfigError(f"--from {source!r}: expected one of {', '.join(SOURCES)}")
        r = import_state_spaces(checkpoint, out, prenorm=prenorm, input_kind=input_kind, disc=disc,
                                task_config=task_config, overrides=list(overrides or []))
        lay, spec = r["layout"], r["spec"]
        typer.echo(f"imported {lay['layer']} x {lay['n_layers']} (H={lay['H']}, N={lay['N']}, {spec['input_kind']} "
                   f"input {spec['d_input']}, {spec['d_output']} outputs, {lay['norm']} norm, "
                   f"{'pre' if lay['prenorm'] else 'post'}-norm{', bidirectional' if lay['bidirectional'] else ''}) "
                   f"to {r['out']}")
        if r["norm_check"]:
            typer.echo("val " + ", ".join(f"{k} {v:.3f}" for k, v in r["norm_check"].items()) + "; "
                       f"{r['metrics']['metric_name']} val {r['metrics']['val_metric']:.3f} "
                       f"test {r['metrics']['test_metric']:.3f}")
        else:
            typer.echo("not checked against data (no --task-config): pre/post-norm is taken from --prenorm as given")
