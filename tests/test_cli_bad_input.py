"""Bad input for every CLI command: exit 2, exactly one line on stderr, no traceback (`--debug` shows it)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _cases(t: Path):
    m, search = str(t / "missing"), str(t)
    return [
        # (argv, a word the one line must contain)
        (["data", "generate", "nosuchtask", "--out", m], "nosuchtask"),
        (["data", "generate", "listops", "--out", m, "--size", "garbage"], "--size"),
        (["data", "generate", "listops", "--out", m, "--train", "abc"], "--train"),
        (["data", "generate", "listops", "--bogus"], "--bogus"),
        (["data", "info", "listops", m], m),
        (["data", "info", "listops", m, "--max-len", "x"], "--max-len"),
        (["train", str(t / "missing.yaml")], "missing.yaml"),
        (["train", str(t / "bad.yaml")], "bad.yaml"),
        (["train", str(t / "list.yaml")], "list.yaml"),
        (["train", "cpu-listops-s4d", "--set", "model.d_model=abc"], "model.d_model"),
        (["train", "cpu-listops-s4d", "--set", "nokey"], "nokey"),
        (["train", "cpu-listops-s4d", "--epochs", "0"], "--epochs"),
        (["train", "no-such-preset"], "no-such-preset"),
        (["search", str(t / "missing.yaml")], "missing.yaml"),
        (["search", "cpu-listops-s4d", "--set", "search.rates=[2.0]"], "search.rates"),
        (["search", "cpu-listops-s4d", "--set", "search.seeds=notalist"], "search.seeds"),
        (["search", "cpu-listops-s4d", "--set", "search.rates=[0.5,0.999]", "--storage", m], "search.rates[1]=0.999"),
        (["search", "cpu-listops-s4d", "--set", "model.bogus=1"], "bogus"),
        (["search", "cpu-listops-s4d", "--unknown-flag"], "--unknown-flag"),
        (["resume", m], m),
        (["resume", search], "search.json"),
        (["resume"], "search_dir"),
        (["status", m], m),
        (["status", search, "--extra"], "--extra"),
        (["report", m], m),
        (["report", search], "stages"),
        (["ablate-layers", m], "model.json"),
        (["ablate-layers", search, "--batch-size", "0"], "--batch-size"),
        (["export", m, "--rate", "0.5", "--out", str(t / "m.onnx")], m),
        (["export", search, "--rate", "abc", "--out", str(t / "m.onnx")], "--rate"),
        (["export", search, "--rate", "0.5"], "--out"),
        (["bench", "latency", "--preset", "nope-s4d"], "nope-s4d"),
        (["bench", "latency", "--threads", "abc"], "--threads"),
        (["bench", "latency", "--repeats", "3"], "--repeats"),
        (["bench", "latency", "--rates", "0.5,x"], "--rates"),
        (["cluster", "local", "up", "--cpus-per-worker", "abc"], "--cpus-per-worker"),
        (["cluster", "local", "down", "--state"], "--state"),
        (["cluster", "local", "status", "--bogus"], "--bogus"),
        (["cluster", "nosuch"], "nosuch"),
        (["sync-mlflow", m], m),
        (["sync-mlflow", search], "ledger"),
        (["sync-mlflow", search, "--tracking-uri"], "--tracking-uri"),
        (["sync-mlflow"], "search_dir"),
        (["nosuchcommand"], "nosuchcommand"),
    ]


N_CASES = 44


@pytest.fixture
def bad_files(tmp_path, monkeypatch):
    monkeypatch.delenv("S4OP_DEBUG", raising=False)  # a user may set it in their shell
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    return tmp_path


def test_every_command_answers_bad_input_with_one_line_and_exit_2(bad_files, capsys):
    cases = _cases(bad_files)
    assert len(cases) == N_CASES
    commands = {tuple(a for a in argv[:3] if not a.startswith("-") and "/" not in a) for argv, _ in cases}
    for journey in ("data", "train", "search", "resume", "status", "report", "ablate-layers", "export", "bench",
                    "cluster", "sync-mlflow"):
        assert any(c[0] == journey for c in commands), journey
    failures = []
    for argv, needle in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        if not (exit_info.value.code == 2 and len(lines) == 1 and lines[0].startswith("s4op: error: ")
                and "Traceback" not in err and needle in lines[0]):
            failures.append((argv, exit_info.value.code, err[-400:]))
    assert not failures, failures
    assert not (bad_files / "missing").exists()  # nothing was created by a refused command


def test_debug_flag_shows_the_traceback(bad_files, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--debug", "status", str(bad_files / "missing")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "Traceback (most recent call last)" in err and "SearchStateError" in err
    assert err.strip().splitlines()[-1].startswith("s4op: error: ")


@pytest.mark.parametrize("argv", [["train", "{t}/missing.yaml", "--threads", "x"], ["sync-mlflow", "{t}"]])
def test_installed_entry_point_exits_2_with_one_line(tmp_path, argv):
    exe = ROOT / ".venv" / "bin" / "s4op"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "orchestrator.cli"]
    env = {k: v for k, v in os.environ.items() if k != "S4OP_DEBUG"}
    proc = subprocess.run(cmd + [a.format(t=tmp_path) for a in argv], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("s4op: error: "), proc.stderr
