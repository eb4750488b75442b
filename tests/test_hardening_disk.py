"""Disk: checkpoints resume and report do not need are pruned; the rest (and running stages) kept."""

import json

from orchestrator.search import ledger
from orchestrator.storage.disk import disk_usage, prunable, prune_checkpoints


def _file(path, n):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * n)


def _stage_folder(d, k, status):
    sd = d / "stages" / f"stage-{k}"
    for t in ("seed-7", "seed-42"):
        tune = sd / f"run_trial_{t}"
        for n in range(3):  # epoch checkpoints 0, 1 and the final marker 2
            _file(tune / f"checkpoint_00000{n}" / "model" / "model.safetensors", 1000)
        _file(tune / "result.json", 10)
        _file(sd / "trials" / t / "model" / "model.safetensors", 500)
        _file(sd / "trials" / t / "model" / ".model.safetensors.tmp-4242", 300)  # killed mid-save
    _file(sd / "best" / "model.safetensors", 500)
    _file(sd / ".best.tmp" / "model.safetensors", 500)  # killed mid-copy
    _file(sd / "experiment_state-x.json", 20)
    trials = [{"search": "s", "stage": k, "trial_id": t, "status": "completed",
               "checkpoint": str(sd / "trials" / t / "model")} for t in ("seed-7", "seed-42")]
    ledger.write_trials(d, trials)
    ledger.write_stage(d, {"search": "s", "stage": k, "status": status, "checkpoint": str(sd / "best")})
    return sd


def test_completed_stage_keeps_last_per_trial_and_best(tmp_path):
    d = tmp_path / "s"
    sd = _stage_folder(d, 1, "completed")
    before = disk_usage(d)
    report = prune_checkpoints(d, 1)
    for t in ("seed-7", "seed-42"):
        tune = sd / f"run_trial_{t}"
        assert sorted(p.name for p in tune.glob("checkpoint_*")) == ["checkpoint_000002"]
        assert (sd / "trials" / t / "model" / "model.safetensors").exists()
        assert not (sd / "trials" / t / "model" / ".model.safetensors.tmp-4242").exists()
        assert (tune / "result.json").exists()
    assert (sd / "best" / "model.safetensors").exists() and not (sd / ".best.tmp").exists()
    assert (sd / "experiment_state-x.json").exists()
    assert report.freed_bytes == 2 * 2 * 1000 + 2 * 300 + 500
    after = disk_usage(d)
    assert before["total"] - after["total"] == report.freed_bytes
    assert after["checkpoints"] == 3 * 500 and after["tune"] == 2 * (1000 + 10) + 20
    assert prune_checkpoints(d, 1).removed == []  # idempotent


def test_stage_not_completed_is_never_pruned(tmp_path):
    d = tmp_path / "s"
    _stage_folder(d, 2, "failed")
    assert prunable(d, 2) == []
    assert prunable(d, 3) == []  # no ledger row at all


def test_a_path_the_ledger_names_is_never_pruned(tmp_path):
    d = tmp_path / "s"
    sd = _stage_folder(d, 1, "completed")
    old = sd / "run_trial_seed-7" / "checkpoint_000000" / "model"
    ledger.write_trials(d, [{"search": "s", "stage": 1, "trial_id": "seed-7", "status": "completed",
                             "checkpoint": str(old)}])
    prune_checkpoints(d, 1)
    assert (old / "model.safetensors").exists()
    assert not (sd / "run_trial_seed-42" / "checkpoint_000000").exists()


def test_disk_usage_splits_the_folder(tmp_path):
    d = tmp_path / "s"
    _file(d / "mlflow.db", 70)
    _file(d / "mlartifacts" / "a" / "b.json", 30)
    _file(d / "baseline" / "model.safetensors", 100)
    _file(d / "config.yaml", 5)
    ledger.write_stage(d, {"search": "s", "stage": 0, "status": "completed"})
    u = disk_usage(d)
    assert u["mlflow"] == 100 and u["checkpoints"] == 100 and u["other"] == 5 and u["ledger"] > 0
    assert u["total"] == sum(v for k, v in u.items() if k != "total")
    json.dumps(u)


def _saved_stage(d):
    import torch

    from workers.checkpoint import checkpoint_sha256, save_checkpoint
    from workers.models.backbone import S4Model
    from workers.models.spec import ModelSpec

    torch.manual_seed(0)
    folder = save_checkpoint(S4Model(ModelSpec(d_input=5, d_output=2, d_model=4, n_layers=1, d_state=2)),
                             d / "stages" / "stage-1" / "best")
    ledger.write_stage(d, {"search": "s", "stage": 1, "status": "completed", "checkpoint": str(folder),
                           "checkpoint_sha256": checkpoint_sha256(folder)})
    return folder


def test_parent_checkpoint_altered_or_missing_is_refused_naming_the_file(tmp_path):
    import pytest

    from orchestrator.search.baseline_stage import verified_stage_checkpoint  # what resume calls
    from search_spaces.errors import CheckpointError

    d = tmp_path / "s"
    folder = _saved_stage(d)
    assert verified_stage_checkpoint(d, 1) == str(folder)
    meta = folder / "model.json"
    altered = meta.read_text().replace('"task": null', '"task": "imdb"')
    meta.write_text(altered)
    with pytest.raises(CheckpointError, match=f"checkpoint {folder} was altered since stage 1"):
        verified_stage_checkpoint(d, 1)
    assert meta.read_text() == altered  # nothing rewritten
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors: missing"):
        verified_stage_checkpoint(d, 1)


def test_status_reports_the_disk_a_search_uses(tmp_path):
    from orchestrator.search.status import format_status, search_status
    from search_spaces.config import dump_config, load_search_config

    d = tmp_path / "s"
    d.mkdir()
    (d / "search.json").write_text(json.dumps({"name": "s", "tracking_uri": "sqlite:///x", "experiment": "s"}))
    (d / "config.yaml").write_text(dump_config(load_search_config("cpu-listops-s4d")))
    _file(d / "baseline" / "model.safetensors", 2_000_000)
    _file(d / "stages" / "stage-1" / "run_trial_x" / "checkpoint_000000" / "m", 1_000_000)
    _file(d / "mlflow.db", 500_000)
    ledger.write_stage(d, {"search": "s", "stage": 0, "rate": 0.0, "status": "completed"})
    st = search_status(d)
    assert st["disk"]["checkpoints"] == 2_000_000 and st["disk"]["tune"] == 1_000_000
    assert st["disk"]["mlflow"] == 500_000 and st["disk_bytes"] == st["disk"]["total"]
    line = [x for x in format_status(st).splitlines() if x.startswith("disk used")][0]
    assert "checkpoints 2.0 MB" in line and "Tune state 1.0 MB" in line and "MLflow 0.5 MB" in line
