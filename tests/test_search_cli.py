"""`s4op search/resume/status` refusals and status, on a search folder created without running it."""

import json
import os
import socket
import subprocess
import sys

import pytest

from orchestrator.search import ledger
from orchestrator.search.create import create_search
from orchestrator.search.folder import read_meta
from orchestrator.search.lock import lock_path
from orchestrator.search.resume import check_config
from orchestrator.search.status import format_status, search_status
from search_helpers import s4op, tiny_config
from search_spaces.config import load_search_config
from search_spaces.errors import SearchStateError


@pytest.fixture(scope="module")
def created(tmp_path_factory):
    """A search folder as `s4op search` leaves it before the first trial (config, meta, ledger, MLflow)."""
    tmp = tmp_path_factory.mktemp("cli")
    cfg_path = tiny_config(tmp, tmp / "data")
    search_dir, lock = create_search(load_search_config(cfg_path), storage=tmp / "runs")
    lock.release()
    return tmp, cfg_path, search_dir


def test_search_creates_everything_before_any_trial(created):
    _, _, search_dir = created
    for name in ("config.yaml", "search.json", "mlflow.db", "ledger/trials.parquet"):
        assert (search_dir / name).exists(), name
    meta = json.loads((search_dir / "search.json").read_text())
    assert meta["tracking_uri"] == "folder:mlflow.db"  # relative to the folder, which may move
    assert read_meta(search_dir)["tracking_uri"] == f"sqlite:///{search_dir.resolve()}/mlflow.db"
    assert ledger.read_trials(search_dir).empty and not lock_path(search_dir).exists()


def test_second_search_with_the_same_name_is_refused(created):
    tmp, cfg_path, search_dir = created
    with pytest.raises(SearchStateError, match=r"already exists; continue it with `s4op resume"):
        create_search(load_search_config(cfg_path), storage=tmp / "runs")


def test_changed_config_is_refused_listing_differences_unless_forced(created):
    _, _, search_dir = created
    with pytest.raises(SearchStateError, match=r"search.finetune.epochs: 2 -> 3.*--force"):
        check_config(search_dir, overrides=["search.finetune.epochs=3"])
    same, diff = check_config(search_dir)
    assert diff == [] and same.search.finetune.epochs == 2
    said = []
    forced, diff = check_config(search_dir, overrides=["search.seeds=[7]"], force=True, log=said.append)
    assert diff == ["search.seeds: [7, 42] -> [7]"] and forced.seed_list == [7] and "search.seeds" in said[0]


def test_hand_edited_stored_config_is_refused(tmp_path):
    cfg = load_search_config(tiny_config(tmp_path, tmp_path / "data"))
    search_dir, lock = create_search(cfg, storage=tmp_path / "runs", tracking_uri=os.environ.get("S4OP_TEST_URI"))
    lock.release()
    text = (search_dir / "config.yaml").read_text().replace("bypass: identity", "bypass: zero")
    (search_dir / "config.yaml").write_text(text)
    with pytest.raises(SearchStateError, match=r"search.bypass: \"identity\" -> \"zero\""):
        check_config(search_dir)


def test_resume_refuses_while_another_driver_holds_the_lock(created):
    tmp, _, search_dir = created
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock_path(search_dir).write_text(json.dumps({"pid": owner.pid, "host": socket.gethostname(), "started_at": "x"}))
        done = s4op("resume", search_dir, cwd=tmp, timeout=120)
        assert done.returncode == 2
        assert f"locked by driver PID {owner.pid}" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    finally:
        owner.kill()
        owner.wait()
        lock_path(search_dir).unlink()


def test_status_lists_what_is_left(created):
    _, _, search_dir = created
    st = search_status(search_dir)
    assert [x["rate"] for x in st["left"]] == [0.2, 0.5, 0.8] and not st["complete"]
    assert st["trials_per_stage"] == 2 and st["disk_bytes"] > 0 and not st["driver"]["running"]
    text = format_status(st)
    assert "left: stage 1 (rate 0.2), stage 2 (rate 0.5), stage 3 (rate 0.8)" in text


def test_status_of_a_folder_that_is_no_search_exits_2(tmp_path):
    done = s4op("status", tmp_path, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and "is not a search folder" in done.stderr
