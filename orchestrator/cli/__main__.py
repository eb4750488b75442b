"""`python -m orchestrator.cli`: the `s4op` command."""

from orchestrator.cli.app import main

main()
