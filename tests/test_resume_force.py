"""`resume --force` applies a change only where the ledger can stay true: a change reaching the
interrupted stage's trials, a completed stage's rate or the completed baseline is refused naming the
setting (exit 2, nothing written); later stages' settings and latency apply."""

from __future__ import annotations

import copy
import json

import pytest

from orchestrator.search.forced import refused_change

OLD = {"task": {"name": "listops", "data_dir": "/d", "max_len": 40},
       "model": {"d_model": 16}, "baseline": {"train": {"epochs": 1}},
       "search": {"rates": [0.3, 0.7], "seeds": [7, 42], "finetune": {"lr": 0.001, "epochs": 1},
                  "allocation": {"policy": "depth-aware"}},
       "latency": {"repeats": 30}, "resources": {"cpu": 1, "max_concurrent": 2}}


def _with(path: str, value):
    new = copy.deepcopy(OLD)
    *parents, leaf = path.split(".")
    d = new
    for p in parents:
        d = d[p]
    d[leaf] = value
    return new


@pytest.mark.parametrize("path, value, completed, interrupted, named", [
    ("search.finetune.lr", 0.5, {0, 1}, 2, "search.finetune.lr"),
    ("search.seeds", [1, 2], {0, 1}, 2, "search.seeds"),
    ("search.rates", [0.3, 0.5], {0, 1}, 2, "search.rates[1]"),
    ("search.rates", [0.4, 0.7], {0, 1}, None, "search.rates[0]"),
    ("baseline.train.epochs", 3, {0}, None, "baseline.train.epochs"),
    ("model.d_model", 32, {0}, 1, "model.d_model"),
])
def test_changes_that_would_make_the_ledger_lie_are_refused_naming_the_setting(path, value, completed, interrupted,
                                                                               named):
    reason = refused_change(OLD, _with(path, value), completed=completed, interrupted=interrupted)
    assert reason is not None and reason.startswith(named), reason


@pytest.mark.parametrize("path, value, completed, interrupted", [
    ("search.finetune.lr", 0.5, {0, 1}, None),  # no stage interrupted: applies from stage 2
    ("search.rates", [0.3, 0.7, 0.9], {0, 1}, 2),  # a new stage appended
    ("search.rates", [0.3, 0.5], {0, 1}, None),  # stage 2 not started: it runs at 0.5
    ("latency.repeats", 50, {0, 1}, 2),
    ("task.data_dir", "/moved", {0, 1}, 2),  # same data elsewhere (its fingerprint is checked)
    ("resources.max_concurrent", 1, {0}, 1),
])
def test_changes_that_keep_the_ledger_true_apply(path, value, completed, interrupted):
    assert refused_change(OLD, _with(path, value), completed=completed, interrupted=interrupted) is None


def test_resume_force_refuses_a_new_lr_for_the_interrupted_stage_and_changes_nothing(tmp_path, capsys):
    """Through the CLI, on a search folder whose stage 2 was interrupted with its Tune state written."""
    from orchestrator.cli.app import main
    from orchestrator.search import ledger
    from orchestrator.search.folder import SearchFolder
    from search_spaces.config import load_search_config
    from hardening_search import tiny_config

    cfg = load_search_config(tiny_config(tmp_path, "f", rates=(0.3, 0.7)))
    folder = SearchFolder(tmp_path / "s")
    folder.root.mkdir()
    folder.write_meta({"name": "f", "tracking_uri": f"sqlite:///{folder.root}/mlflow.db", "experiment": "f",
                       "config": cfg.model_dump(mode="json")})
    folder.write_config(cfg)
    for k in (0, 1):
        ledger.write_stage(folder.root, ledger.StageRow(search="f", stage=k, rate=0.3 * k, status="completed"))
    folder.stage_dir(2).mkdir(parents=True)
    (folder.stage_dir(2) / "tuner.pkl").write_bytes(b"x")
    before = {p: p.read_bytes() for p in folder.root.rglob("*") if p.is_file()}

    with pytest.raises(SystemExit) as exit_:
        main(["resume", str(folder.root), "--force", "--set", "search.finetune.lr=0.5"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "search.finetune.lr changed (0.001 -> 0.5)" in err[0] and "stage 2" in err[0], err
    assert {p: p.read_bytes() for p in folder.root.rglob("*") if p.is_file()} == before
    assert json.loads(folder.meta_path.read_text())["config"]["search"]["finetune"]["lr"] == 0.001
    assert not (folder.root / "search.lock").exists()
