"""Moved and copied search folders: ledger paths and the default MLflow store follow the folder (old
folders with absolute paths included); a copy says so and uses its own store; nothing re-creates the
old folder or writes into the original's."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.search import ledger
from orchestrator.search.folder import SearchFolder, read_meta
from orchestrator.tracking.client import Tracker, default_tracking_uri, run_key


def _old_style_folder(root):
    """A search folder as older versions wrote it: absolute ledger paths, absolute sqlite URI."""
    folder = SearchFolder(root)
    (root / "baseline").mkdir(parents=True)
    (root / "baseline" / "model.json").write_text("{}")
    folder.meta_path.write_text(json.dumps({"name": "s", "tracking_uri": default_tracking_uri(root), "experiment": "s"}))
    row = {f: None for f in ledger.STAGE_SCHEMA.names} | {"search": "s", "stage": 0, "rate": 0.0,
                                                         "status": "completed", "checkpoint": str(root / "baseline")}
    ledger.ledger_dir(root).mkdir()
    pq.write_table(pa.Table.from_pylist([row], schema=ledger.STAGE_SCHEMA), ledger.stages_path(root))
    tracker = Tracker(default_tracking_uri(root))
    exp = tracker.open_experiment("s", artifact_dir=folder.artifacts_dir)
    tracker.run(exp, run_key("s"), name="s")
    return folder


def test_new_ledger_paths_are_stored_relative_and_read_under_the_folder(tmp_path):
    root = tmp_path / "a"
    ledger.write_stage(root, ledger.StageRow(stage=0, status="completed", checkpoint=str(root.resolve() / "baseline")))
    stored = pq.read_table(ledger.stages_path(root)).to_pylist()[0]["checkpoint"]
    assert stored == "baseline"
    shutil.move(root, tmp_path / "b")
    assert ledger.stage_rows(tmp_path / "b")[0].checkpoint == str((tmp_path / "b" / "baseline").resolve())
    assert ledger.read_stages(tmp_path / "b")["checkpoint"][0] == str((tmp_path / "b" / "baseline").resolve())


def test_a_moved_old_folder_reads_its_own_paths_and_never_recreates_the_old_one(tmp_path, capsys):
    from orchestrator.tracking.report_run import log_report

    old = tmp_path / "old"
    _old_style_folder(old)
    new = tmp_path / "new"
    shutil.move(old, new)
    assert ledger.stage_rows(new)[0].checkpoint == str(new / "baseline")
    assert read_meta(new)["tracking_uri"] == f"sqlite:///{new / 'mlflow.db'}"
    out = new / "report"
    out.mkdir()
    (out / "x.txt").write_text("x")
    warnings = []
    assert log_report(new, "s", out, read_meta(new)["tracking_uri"], warn=warnings.append) is None
    assert warnings and "outside" in warnings[0]
    assert not old.exists()


def test_a_copy_says_so_and_uses_its_own_store_and_files(tmp_path, capsys):
    original = tmp_path / "orig"
    _old_style_folder(original)
    before = (original / "mlflow.db").read_bytes()
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    meta = read_meta(copy)
    assert meta["tracking_uri"] == f"sqlite:///{copy / 'mlflow.db'}"
    assert "is a copy of the search folder" in capsys.readouterr().err
    assert ledger.stage_rows(copy)[0].checkpoint == str(copy / "baseline")
    tracker = Tracker(meta["tracking_uri"])
    run = tracker.find_run(tracker.experiment_ids("s"), run_key("s"))
    assert tracker.log_artifact(run, copy / "baseline" / "model.json") is False  # its artifacts would land in orig
    assert (original / "mlflow.db").read_bytes() == before
    assert not any((original / "mlartifacts").rglob("model.json"))


def test_search_json_names_the_folders_own_store_relative_to_it(tmp_path):
    root = tmp_path / "a"
    root.mkdir()
    folder = SearchFolder(root)
    folder.write_meta({"name": "s", "tracking_uri": default_tracking_uri(root), "experiment": "s"})
    assert json.loads(folder.meta_path.read_text())["tracking_uri"] == "folder:mlflow.db"
    assert read_meta(root)["tracking_uri"] == default_tracking_uri(root)
    shutil.move(root, tmp_path / "b")
    assert read_meta(tmp_path / "b")["tracking_uri"] == default_tracking_uri(tmp_path / "b")
    other = {"name": "s", "tracking_uri": "http://127.0.0.1:5000", "experiment": "s"}
    SearchFolder(tmp_path / "b").write_meta(other)  # a server, or another folder's store: as given
    assert read_meta(tmp_path / "b")["tracking_uri"] == "http://127.0.0.1:5000"
