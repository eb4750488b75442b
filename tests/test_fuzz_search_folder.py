"""Corrupt or wrong-shape `search.json` and `config.yaml` (truncated, `[]`, `{}`, wrong types, random
bytes): every command reading a search folder says one line naming the file and what is wrong,
exits 2, and changes nothing in the folder."""

from __future__ import annotations

import random

import pytest

from hardening_search import tiny_config

COMMANDS = (["status"], ["resume"], ["report"], ["sync-mlflow"])
META_BAD = ["", "[]", "{}", "null", '"x"', '{"name": "f"}', '{"name": 3, "tracking_uri": "sqlite:///x"}',
            '{"name": "f", "tracking_uri": "sqlite:///x", "config": []}', '{"name": "f", "tracking_uri": 1}']
CONFIG_BAD = ["[]", "{}", "name: [", '"x"', "name: f\n", "\x00\xff\xfe"]


def _fuzzed(text: str, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = [text[: rng.randrange(1, len(text))] for _ in range(3)]  # truncated
    for _ in range(3):  # a few bytes flipped
        chars = list(text)
        for _ in range(4):
            chars[rng.randrange(len(chars))] = chr(rng.randrange(32, 127))
        out.append("".join(chars))
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from orchestrator.search import ledger
    from orchestrator.search.folder import SearchFolder
    from search_spaces.config import load_search_config

    tmp = tmp_path_factory.mktemp("fz")
    cfg = load_search_config(tiny_config(tmp, "f"))
    folder = SearchFolder(tmp / "s")
    folder.root.mkdir()
    folder.write_meta({"name": "f", "tracking_uri": f"sqlite:///{folder.root}/mlflow.db", "experiment": "f",
                       "config": cfg.model_dump(mode="json")})
    folder.write_config(cfg)
    ledger.write_stage(folder.root, ledger.StageRow(search="f", stage=0, rate=0.0, status="completed"))
    return folder


def _run(args, capsys):
    from orchestrator.cli.app import main

    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err.strip().splitlines()


def _check(folder, path, text, capsys):
    good = path.read_bytes()
    try:
        path.write_bytes(text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text)
        before = {p: p.read_bytes() for p in folder.root.rglob("*") if p.is_file()}
        for command in COMMANDS:
            code, err = _run([*command, str(folder.root)], capsys)
            if code == 0:  # a flipped byte inside a value can leave a valid file; report reads no config.yaml
                before = {p: p.read_bytes() for p in folder.root.rglob("*") if p.is_file()}
                continue
            assert code == 2 and len(err) == 1 and err[0].startswith("s4op: error:"), (command, text, err)
            assert path.name in err[0], (command, text, err)
            assert {p: p.read_bytes() for p in folder.root.rglob("*") if p.is_file()} == before, (command, text)
    finally:
        path.write_bytes(good)


@pytest.mark.parametrize("text", META_BAD)
def test_wrong_shape_search_json(folder, text, capsys):
    _check(folder, folder.meta_path, text, capsys)


@pytest.mark.parametrize("text", CONFIG_BAD)
def test_wrong_shape_config_yaml(folder, text, capsys):
    _check(folder, folder.config_path, text, capsys)


def test_fuzzed_search_json_and_config_yaml(folder, capsys):
    for path in (folder.meta_path, folder.config_path):
        for text in _fuzzed(path.read_text(), seed=len(path.name)):
            _check(folder, path, text, capsys)
