"""`s4op train`: a preset or YAML in, data generated if missing, checkpoint + MLflow run out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import main

TINY = {
    "name": "tiny-listops",
    "task": {
        "name": "listops",
        "data_dir": None,  # set per test
        "max_len": 64,
        "val_fraction": 0.2,
        "generate": {"train": 120, "val": 40, "test": 40, "seed": 0,
                     "options": {"min_len": 4, "max_len": 40, "max_depth": 3, "max_args": 4}},
    },
    "model": {"kind": "s4d", "d_model": 16, "n_layers": 1, "d_state": 8},
    "baseline": {"train": {"epochs": 2, "batch_size": 20, "lr": 0.003, "patience": 2, "seed": 0}},
}


def write_config(tmp_path: Path, data_dir: Path, **changes) -> Path:
    cfg = json.loads(json.dumps(TINY))
    cfg["task"]["data_dir"] = str(data_dir)
    for key, value in changes.items():
        section, _, leaf = key.partition("__")
        cfg[section][leaf] = value
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cli(argv, capsys) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_train_generates_data_writes_checkpoint_and_tracks_the_run(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from orchestrator.baseline import train_baseline
    from search_spaces.config import load_search_config
    from workers.checkpoint import load_checkpoint
    from workers.data import fingerprint, load_task
    from workers.training import evaluate

    data_dir = tmp_path / "data"
    config = write_config(tmp_path, data_dir)
    out = tmp_path / "run"
    code, stdout, err = run_cli(["train", str(config), "--out", str(out), "--epochs", "3"], capsys)
    assert code == 0, err
    assert data_dir.is_dir() and any(data_dir.iterdir())  # generated on the way
    assert "epoch   3/3" in stdout and "ETA" in stdout
    assert f"checkpoint: {out.resolve()}" in stdout

    model, meta = load_checkpoint(out)
    assert meta["task"] == "listops"
    assert meta["data_fingerprint"] == fingerprint(data_dir)
    splits = load_task("listops", data_dir, max_len=64, val_fraction=0.2)
    val = evaluate(model, splits.val, splits.info, batch_size=20)
    assert meta["metrics"]["val_metric"] == pytest.approx(val)
    assert [h["epoch"] for h in meta["extra"]["history"]] == [1, 2, 3]

    client = MlflowClient(f"sqlite:///{out.resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("s4op-train")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["s4op.data_fingerprint"] == meta["data_fingerprint"]
    assert run.data.params["baseline.train.epochs"] == "3"
    assert run.data.params["model.d_model"] == "16"
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]  # per epoch, then the final model one step past
    assert run.data.metrics["val_accuracy"] == pytest.approx(meta["metrics"]["val_metric"])
    assert run.data.metrics["test_accuracy"] == pytest.approx(meta["metrics"]["test_metric"])
    seconds = client.get_metric_history(run.info.run_id, "epoch_seconds")
    assert len(seconds) == 3 and all(m.value > 0 for m in seconds)  # each epoch's own time, not cumulative
    assert sum(m.value for m in seconds) <= meta["metrics"]["train_time_s"]
    assert run.data.tags["s4op.kind"] == "baseline"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")}
    assert artifacts == {"checkpoint/model.json", "checkpoint/model.safetensors"}

    # the driver's way: its own store and a parent run; same config -> same weights and metrics
    uri = f"sqlite:///{tmp_path / 'search.db'}"
    driver = MlflowClient(uri)
    experiment_id = driver.create_experiment("a-search", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = driver.create_run(experiment_id).info.run_id
    cfg = load_search_config(config, ["baseline.train.epochs=3"])
    again = train_baseline(cfg, tmp_path / "again", tracking_uri=uri, parent_run_id=parent)
    assert (again / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
    assert json.loads((again / "model.json").read_text())["metrics"]["val_metric"] == meta["metrics"]["val_metric"]
    (child,) = [r for r in driver.search_runs([driver.get_run(parent).info.experiment_id]) if r.info.run_id != parent]
    assert child.data.tags["mlflow.parentRunId"] == parent
    assert not (tmp_path / "again" / "mlflow.db").exists()
    assert {a.path for a in driver.list_artifacts(child.info.run_id, "checkpoint")} == artifacts


def test_unknown_preset_is_one_line_and_exit_2(capsys):
    code, _, err = run_cli(["train", "cpu-listops-s4dd"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "cpu-listops-s4d" in err  # suggests the close name


def test_bad_override_names_the_key(tmp_path, capsys):
    config = write_config(tmp_path, tmp_path / "data")
    code, _, err = run_cli(["train", str(config), "--set", "model.d_model=wide", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "model.d_model" in err and err.count("\n") == 1
    assert not (tmp_path / "data").exists() and not (tmp_path / "o").exists()


def test_missing_data_without_generate_is_a_data_error(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    config = write_config(tmp_path, missing, task__generate=None)
    code, _, err = run_cli(["train", str(config), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and str(missing) in err and err.count("\n") == 1
    assert not (tmp_path / "o" / "model.json").exists()
