"""The `s4op` command line: one entry point mirroring the user's journeys.

data, train, search, resume, status, report, ablate-layers, export, bench, cluster. Each journey's
commands live in their own module (`orchestrator/cli/<journey>.py`) exposing `register(app)`;
this module only assembles them and turns user errors into one line and exit code 2.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback

import typer

try:  # typer >= 0.20 vendors click as typer._click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exc

from orchestrator.search.interrupt import SearchInterrupted, report
from search_spaces.errors import S4opError

JOURNEYS = ("data", "train", "bench", "search", "resume", "status", "report", "cluster", "sync", "import_model",
            "sweep")

_debug_flag = False  # set by --debug for the current invocation only

app = typer.Typer(
    name="s4op",
    help="Operator-level pruning search for S4/S4D models on Ray Tune, tracked in MLflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
) -> None:
    global _debug_flag
    _debug_flag = debug


def _register_journeys() -> None:
    for journey in JOURNEYS:
        importlib.import_module(f"orchestrator.cli.{journey}").register(app)


_register_journeys()


def _debug_requested(argv: list[str]) -> bool:
    return _debug_flag or "--debug" in argv or os.environ.get("S4OP_DEBUG") == "1"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print one line on stderr and exit 2."""
    global _debug_flag
    argv = list(sys.argv[1:] if argv is None else argv)
    _debug_flag = False
    try:
        # Without standalone mode, typer returns the code of `typer.Exit` (and 130 for Ctrl-C)
        # instead of exiting: pass it on.
        code = app(args=argv, prog_name="s4op", standalone_mode=False)
        if code == 130:
            print("s4op: aborted", file=sys.stderr)
        if isinstance(code, int) and not isinstance(code, bool) and code != 0:
            raise SystemExit(code)
    except SearchInterrupted as exc:  # SIGINT / SIGTERM of a running search: one line, 130 / 143
        raise SystemExit(report(exc))
    except OSError as exc:  # disk full, quota, read-only storage: one line naming path, device, free space
        from orchestrator.storage.full import storage_message

        message = storage_message(exc)
        if message is None:
            raise
        if _debug_requested(argv):
            traceback.print_exc()
        print(f"s4op: error: {message}", file=sys.stderr)
        raise SystemExit(2)
    except S4opError as exc:
        if _debug_requested(argv):
            traceback.print_exc()
        print(f"s4op: error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code)
    except click_exc.NoArgsIsHelpError:
        raise SystemExit(0)
    except click_exc.UsageError as exc:
        where = f" ({exc.ctx.command_path})" if exc.ctx is not None else ""
        print(f"s4op: error: {exc.format_message()}{where}", file=sys.stderr)
        raise SystemExit(2)
    except typer.Abort:
        print("s4op: aborted", file=sys.stderr)
        raise SystemExit(130)
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code)
    except click_exc.ClickException as exc:
        print(f"s4op: error: {exc.format_message()}", file=sys.stderr)
        raise SystemExit(exc.exit_code)
    return 0


if __name__ == "__main__":
    main()
