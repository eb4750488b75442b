"""max_len: null keeps every sequence whole (L = the longest); a max_len that cuts says so per split."""

from __future__ import annotations

import numpy as np
import pytest

from workers.data import generate_task, load_task
from workers.data.tasks import truncation_notes, truncation_report

OPTS = {"min_len": 10, "max_len": 60, "max_depth": 4, "max_args": 5}


@pytest.fixture(scope="module")
def listops_dir(tmp_path_factory):
    return generate_task("listops", tmp_path_factory.mktemp("lo") / "d", size={"train": 80, "val": 20, "test": 20},
                         seed=0, options=OPTS)


def test_null_max_len_is_the_longest_sequence_and_nothing_is_cut(listops_dir):
    s = load_task("listops", listops_dir)
    longest = max(int(getattr(s, k).full_lengths.max()) for k in ("train", "val", "test"))
    assert s.train.x.shape[1] == s.test.x.shape[1] == longest
    assert truncation_report(s) == [] and truncation_notes(s) == []


def test_a_cutting_max_len_is_reported_once_per_split_with_count_and_longest(listops_dir):
    whole = load_task("listops", listops_dir)
    L = 20
    s = load_task("listops", listops_dir, max_len=L)
    report = {r["split"]: r for r in truncation_report(s)}
    for name in ("train", "val", "test"):
        full = getattr(whole, name).lengths
        if (full > L).any():
            assert report[name] == {"split": name, "L": L, "truncated": int((full > L).sum()), "n": len(full),
                                    "longest": int(full.max())}
        else:
            assert name not in report
    notes = truncation_notes(s)
    assert len(notes) == len(report) >= 1
    train = report["train"]
    assert f"task.max_len={L} truncates {train['truncated']:,} of {train['n']:,} train sequences " \
           f"(longest {train['longest']:,} tokens)" in notes[0]
    assert (s.train.lengths <= L).all() and (s.train.full_lengths == whole.train.lengths).all()


def test_carved_validation_keeps_the_original_lengths(listops_dir, tmp_path):
    d = tmp_path / "noval"
    d.mkdir()
    for split in ("train", "test"):
        (d / f"basic_{split}.tsv").write_bytes((listops_dir / f"basic_{split}.tsv").read_bytes())
    s = load_task("listops", d, max_len=15)
    for split in (s.train, s.val):
        assert split.full_lengths is not None and (np.minimum(split.full_lengths, 15) == split.lengths).all()


def test_imdb_pathfinder_ecg_default_to_their_whole_length(tmp_path):
    imdb = generate_task("imdb", tmp_path / "imdb", size={"train": 20, "test": 10}, seed=0,
                         options={"min_words": 5, "max_words": 30})
    s = load_task("imdb", imdb)
    assert s.train.x.shape[1] == max(int(getattr(s, k).full_lengths.max()) for k in ("train", "val", "test"))
    assert truncation_notes(s) == [] and len(truncation_notes(load_task("imdb", imdb, max_len=8))) >= 1
    pf = generate_task("pathfinder", tmp_path / "pf", size={"train": 12, "val": 0, "test": 0}, seed=0,
                       options={"resolution": 16})
    s = load_task("pathfinder", pf)
    assert s.train.x.shape[1] == 256 and truncation_notes(s) == []
    notes = truncation_notes(load_task("pathfinder", pf, max_len=100))
    assert notes and "(longest 256 steps)" in notes[0]
    ecg = generate_task("ecg", tmp_path / "ecg", size={"train": 30}, seed=0, options={"n_samples": 80, "fs": 100})
    s = load_task("ecg", ecg)
    assert s.train.x.shape[1] == 80 and truncation_notes(s) == []
    assert "of" in truncation_notes(load_task("ecg", ecg, max_len=20))[0]


def test_training_console_says_it_once_per_split(listops_dir, capsys):
    from orchestrator.baseline import say_truncation_once

    s = load_task("listops", listops_dir, max_len=20)
    say_truncation_once(s, "fp-test")
    say_truncation_once(s, "fp-test")  # a search loads the data twice: still said once
    lines = [line for line in capsys.readouterr().out.splitlines() if "truncates" in line]
    assert lines == truncation_notes(s) and len(lines) >= 1
