"""The `s4op` command line: one thin module per journey (parse flags, call one function, print)."""

from orchestrator.cli.app import app, main

__all__ = ["app", "main"]
