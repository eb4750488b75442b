"""Shared data contract: task table, fingerprints, atomic generation, `s4op data` CLI."""

import json
import os

import numpy as np
import pytest

from orchestrator.cli import main
from search_spaces.errors import DataError
from workers.data import TASKS, ArraySplit, fingerprint, generate_task, load_task, task_info
from workers.data.tasks import carve, summarize

LISTOPS = ["--option", "min_len=10", "--option", "max_len=40", "--option", "max_depth=4"]


def run_cli(argv, capsys):
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_task_table_matches_the_contract():
    assert set(TASKS) == {"listops", "pathfinder", "imdb", "ecg"}
    lo, pf, im, ec = (task_info(t) for t in ("listops", "pathfinder", "imdb", "ecg"))
    assert (lo.input_kind, lo.d_input, lo.n_classes, lo.metric, lo.default_len) == ("tokens", 18, 10, "accuracy", 2048)
    assert (pf.input_kind, pf.d_input, pf.n_classes, pf.default_len) == ("real", 1, 2, 1024)
    assert (im.input_kind, im.d_input, im.n_classes, im.default_len) == ("tokens", 257, 2, 4096)
    assert (ec.d_input, ec.n_classes, ec.multilabel, ec.metric, ec.default_len) == (12, 6, True, "macro_f1", 4096)
    with pytest.raises(DataError, match="unknown task 'cifar'"):
        task_info("cifar")
    with pytest.raises(DataError, match="unknown task"):
        load_task("cifar", ".")


def test_carve_is_a_seeded_partition():
    kept, carved = carve(50, 0.2, seed=3)
    assert len(carved) == 10 and sorted(np.concatenate([kept, carved]).tolist()) == list(range(50))
    assert np.array_equal(carve(50, 0.2, seed=3)[1], carved) and not np.array_equal(carve(50, 0.2, seed=4)[1], carved)
    assert len(carve(2, 0.01, seed=0)[1]) == 1  # never an empty val split
    with pytest.raises(DataError, match="val_fraction"):
        carve(10, 1.5, seed=0)


def test_fingerprint_tracks_paths_and_bytes(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_bytes(b"hello")
    (tmp_path / "y.txt").write_bytes(b"world")
    base = fingerprint(tmp_path)
    assert len(base) == 64 and fingerprint(tmp_path) == base
    (tmp_path / ".DS_Store").write_bytes(b"junk")  # hidden files do not count
    assert fingerprint(tmp_path) == base
    (tmp_path / "y.txt").write_bytes(b"World")
    assert fingerprint(tmp_path) != base
    (tmp_path / "y.txt").write_bytes(b"world")
    os.rename(tmp_path / "a" / "x.txt", tmp_path / "a" / "z.txt")
    assert fingerprint(tmp_path) != base
    with pytest.raises(DataError, match="not found"):
        fingerprint(tmp_path / "missing")


def test_generation_is_atomic_and_refuses_non_empty_folders(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        generate_task("listops", out, size={"train": 3, "val": 1, "test": 1}, options={"min_len": 5, "max_len": 30})
    assert os.listdir(out) == ["keep.txt"]
    with pytest.raises(DataError):  # a failing generator leaves no temp folder behind
        generate_task("listops", tmp_path / "e", size={"train": 3}, options={"max_depth": 0})
    assert sorted(os.listdir(tmp_path)) == ["d"]
    empty = tmp_path / "empty"
    empty.mkdir()
    generate_task("listops", empty, size={"train": 3, "val": 1, "test": 1}, options={"min_len": 5, "max_len": 30})
    assert sorted(os.listdir(empty)) == ["basic_test.tsv", "basic_train.tsv", "basic_val.tsv"]
    generate_task("listops", out, size={"train": 3, "val": 1, "test": 1}, options={"min_len": 5, "max_len": 30},
                  overwrite=True)
    assert "keep.txt" not in os.listdir(out) and sorted(os.listdir(tmp_path)) == ["d", "empty"]


@pytest.mark.parametrize("size, needle", [({"train": -1}, "train=-1"), ({"tain": 3}, "'tain'"), ([3], "mapping")])
def test_bad_sizes(tmp_path, size, needle):
    with pytest.raises(DataError, match=needle):
        generate_task("imdb", tmp_path / "d", size=size)


def test_summarize_majority_rate():
    from workers.data import TaskSplits

    x = np.ones((5, 4), np.int64)
    split = ArraySplit(x, np.array([1, 2, 3, 4, 4]), np.array([1, 1, 1, 0, 2]))
    test = ArraySplit(x[:2], np.array([4, 4]), np.array([0, 1]))
    d = summarize(TaskSplits(split, split, test, task_info("listops")))
    assert d["majority_class"] == 1
    assert d["splits"]["train"]["majority_rate"] == 0.6 and d["splits"]["test"]["majority_rate"] == 0.5
    assert d["splits"]["train"]["length_max"] == 4 and d["splits"]["train"]["class_counts"][:3] == [1, 3, 1]


def test_cli_generate_then_info(tmp_path, capsys):
    out = tmp_path / "lo"
    code, stdout, _ = run_cli(["data", "generate", "listops", "--out", str(out), "--size", "train=30,val=5",
                               "--test", "6", "--seed", "2", *LISTOPS], capsys)
    assert code == 0
    assert f"fingerprint: {fingerprint(out)}" in stdout and "train=30, val=5, test=6" in stdout
    code, stdout, _ = run_cli(["data", "info", "listops", str(out), "--max-len", "40", "--json"], capsys)
    assert code == 0
    info = json.loads(stdout)
    assert [info["splits"][k]["n"] for k in ("train", "val", "test")] == [30, 5, 6]
    assert info["L"] == 40 and info["fingerprint"] == fingerprint(out)
    code, stdout, _ = run_cli(["data", "info", "listops", str(out)], capsys)
    assert code == 0 and "majority = majority baseline (train's most frequent class" in stdout
    assert "truncates" not in stdout  # max_len null: the longest sequence, nothing cut


def test_cli_info_says_what_max_len_truncates_once_per_split(tmp_path, capsys):
    from workers.data import load_task
    from workers.metrics import majority_baseline

    out = tmp_path / "lo"
    assert run_cli(["data", "generate", "listops", "--out", str(out), "--size", "train=30,val=8,test=8",
                    *LISTOPS], capsys)[0] == 0
    whole = load_task("listops", out)
    code, stdout, _ = run_cli(["data", "info", "listops", str(out), "--max-len", "12"], capsys)
    assert code == 0
    notes = [line for line in stdout.splitlines() if "truncates" in line]
    cut = {k: int((getattr(whole, k).lengths > 12).sum()) for k in ("train", "val", "test")}
    assert len(notes) == sum(1 for v in cut.values() if v)
    assert f"truncates {cut['train']:,} of 30 train sequences (longest {int(whole.train.lengths.max()):,} tokens)" \
        in notes[0]
    code, stdout, _ = run_cli(["data", "info", "listops", str(out), "--json"], capsys)
    info = json.loads(stdout)
    # the val figure is the one `s4op train` prints: train's majority class scored on val
    assert info["splits"]["val"]["majority_rate"] == round(majority_baseline(whole.train.y, whole.val.y), 4)
    assert info["truncated"] == [] and "train's most frequent class" in info["majority_definition"]


def test_cli_refuses_non_empty_unless_force_and_reports_errors(tmp_path, capsys):
    out = tmp_path / "lo"
    args = ["data", "generate", "listops", "--out", str(out), "--size", "train=4,val=1,test=1", *LISTOPS]
    assert run_cli(args, capsys)[0] == 0
    before = fingerprint(out)
    code, _, err = run_cli(args + ["--seed", "9"], capsys)
    assert code == 2 and "not empty" in err and err.count("\n") == 1
    assert fingerprint(out) == before
    assert run_cli(args + ["--seed", "9", "--force"], capsys)[0] == 0
    assert fingerprint(out) != before
    code, _, err = run_cli(["data", "generate", "listops", "--out", str(tmp_path / "x"), "--option", "depth=3"], capsys)
    assert code == 2 and "unknown generate option 'depth'" in err
    code, _, err = run_cli(["data", "generate", "listops", "--out", str(tmp_path / "x"), "--size", "train:3"], capsys)
    assert code == 2 and "--size item 'train:3'" in err
    code, _, err = run_cli(["data", "info", "imdb", str(tmp_path / "absent")], capsys)
    assert code == 2 and "absent" in err
