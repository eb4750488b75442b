"""The CLI entry point: exit codes a user's shell and scripts rely on."""

import pytest
import typer

from orchestrator import cli
from search_spaces.errors import ConfigError


@pytest.fixture
def probe_command():
    """Register a throwaway `probe` command whose behaviour each test picks."""
    behaviour = {}

    @cli.app.command("probe")
    def probe() -> None:
        behaviour["run"]()

    yield behaviour
    cli.app.registered_commands[:] = [c for c in cli.app.registered_commands if c.name != "probe"]


def _exit_code(argv):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    return info.value.code


def test_ctrl_c_exits_130_with_a_message(probe_command, capsys):
    def interrupted():
        raise KeyboardInterrupt

    probe_command["run"] = interrupted
    assert _exit_code(["probe"]) == 130
    assert "aborted" in capsys.readouterr().err


def test_typer_exit_code_is_passed_on(probe_command):
    def fails():
        raise typer.Exit(3)

    probe_command["run"] = fails
    assert _exit_code(["probe"]) == 3


def test_user_error_is_one_line_and_exit_2(probe_command, capsys):
    def bad():
        raise ConfigError("search.rates[2]=0.4 must be greater\n than search.rates[1]=0.5")

    probe_command["run"] = bad
    assert _exit_code(["probe"]) == 2
    err = capsys.readouterr().err
    assert err == "s4op: error: search.rates[2]=0.4 must be greater than search.rates[1]=0.5\n"


def test_success_returns_zero(probe_command):
    probe_command["run"] = lambda: None
    assert cli.main(["probe"]) == 0


def test_unknown_option_is_one_line_exit_2(capsys):
    assert _exit_code(["--bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--bogus" in err[0]


def test_debug_shows_the_traceback_only_for_that_invocation(probe_command, capsys, monkeypatch):
    monkeypatch.delenv("S4OP_DEBUG", raising=False)

    def bad():
        raise ConfigError("bad value")

    probe_command["run"] = bad
    assert _exit_code(["--debug", "probe"]) == 2
    assert "Traceback" in capsys.readouterr().err
    assert _exit_code(["probe"]) == 2
    assert capsys.readouterr().err == "s4op: error: bad value\n"
