"""ListOps: LRA generator semantics, LRA TSV layout, loader and tokenizer, bad rows."""

from collections import Counter

import numpy as np
import pytest

from search_spaces.errors import DataError
from workers.data import fingerprint, generate_task, load_task, task_info
from workers.data import listops

OPTS = {"min_len": 20, "max_len": 80, "max_depth": 6, "max_args": 5}
SIZE = {"train": 120, "val": 30, "test": 30}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return generate_task("listops", tmp_path_factory.mktemp("lo") / "d", size=SIZE, seed=3, options=OPTS)


def _rows(path):
    lines = path.read_text().splitlines()
    return lines[0], [line.split("\t") for line in lines[1:]]


def test_lra_serialisation_and_operators():
    tree = [listops.MAX, 2, 9]
    assert listops.to_source(tree) == "( ( ( [MAX 2 ) 9 ) ] )"
    assert listops.value_of([listops.MED, 1, 2]) == 1  # median 1.5 truncated
    assert listops.value_of([listops.MED, 3, 8, 1]) == 3
    assert listops.value_of([listops.SM, 7, 8, 9]) == 4  # 24 mod 10
    assert listops.value_of([listops.MIN, 4, [listops.MAX, 2, 9], 5]) == 4
    nested = [listops.SM, [listops.MIN, 3, 1], 8]
    assert listops.evaluate_source(listops.to_source(nested)) == 9


def test_generated_files_have_lra_layout_and_correct_targets(demo):
    all_sources = []
    for split, n in SIZE.items():
        header, rows = _rows(demo / f"basic_{split}.tsv")
        assert header == "Source\tTarget"
        assert len(rows) == n
        for source, target in rows:
            assert listops.evaluate_source(source) == int(target)
            n_tokens = len(listops.tokenize(source))
            assert OPTS["min_len"] < n_tokens < OPTS["max_len"]
            assert source.startswith("( ") and source.endswith(" )")
            all_sources.append(source)
    assert len(set(all_sources)) == len(all_sources)  # deduplicated across splits


def test_empty_val_file_falls_back_to_carving(tmp_path):
    out = generate_task("listops", tmp_path / "d", size={"train": 20, "val": 0, "test": 5}, options=OPTS)
    assert (out / "basic_val.tsv").read_text() == "Source\tTarget\n"
    s = load_task("listops", out, max_len=80, val_fraction=0.2)
    assert (len(s.train), len(s.val), len(s.test)) == (16, 4, 5)


def test_label_distribution_not_degenerate(tmp_path):
    out = generate_task("listops", tmp_path / "d", size={"train": 400, "val": 0, "test": 0}, seed=0,
                        options={"min_len": 30, "max_len": 120})
    _, rows = _rows(out / "basic_train.tsv")
    counts = Counter(int(t) for _, t in rows)
    assert len(counts) == 10
    assert max(counts.values()) / len(rows) < 0.3


def test_generation_is_deterministic_per_seed(tmp_path, demo):
    again = generate_task("listops", tmp_path / "a", size=SIZE, seed=3, options=OPTS)
    other = generate_task("listops", tmp_path / "b", size=SIZE, seed=4, options=OPTS)
    assert fingerprint(again) == fingerprint(demo)
    assert fingerprint(other) != fingerprint(demo)


def test_loader_shapes_tokens_and_padding(demo):
    info = task_info("listops")
    s = load_task("listops", demo, max_len=64)
    assert (len(s.train), len(s.val), len(s.test)) == (120, 30, 30)
    assert s.train.x.shape == (120, 64) and s.train.x.dtype == np.int64
    assert s.train.y.dtype == np.int64 and set(np.unique(s.train.y)) <= set(range(10))
    assert s.train.x.max() < info.d_input and s.train.x.min() >= 0
    _, rows = _rows(demo / "basic_train.tsv")
    ids = listops.tokenize(rows[0][0])
    assert s.train.lengths[0] == min(len(ids), 64)
    assert s.train.x[0, :s.train.lengths[0]].tolist() == ids[:64].tolist()
    assert (s.train.x[0, s.train.lengths[0]:] == 0).all()
    assert s.train.y[0] == int(rows[0][1])
    full = load_task("listops", demo)  # max_len None: the longest sequence of the three files
    longest = max(len(listops.tokenize(src)) for split in ("train", "val", "test")
                  for src, _ in _rows(demo / f"basic_{split}.tsv")[1])
    assert full.train.x.shape[1] == longest and (full.train.lengths < OPTS["max_len"]).all()
    assert (full.train.lengths == full.train.full_lengths).all()


def test_val_carved_from_train_when_no_val_file(demo, tmp_path):
    d = tmp_path / "noval"
    d.mkdir()
    for split in ("train", "test"):
        (d / f"basic_{split}.tsv").write_bytes((demo / f"basic_{split}.tsv").read_bytes())
    a = load_task("listops", d, max_len=80, val_fraction=0.25, seed=1)
    b = load_task("listops", d, max_len=80, val_fraction=0.25, seed=1)
    c = load_task("listops", d, max_len=80, val_fraction=0.25, seed=2)
    assert (len(a.train), len(a.val)) == (90, 30)
    assert np.array_equal(a.val.x, b.val.x) and not np.array_equal(a.val.x, c.val.x)
    rows = {r.tobytes() for r in np.concatenate([a.train.x, a.val.x])}
    assert len(rows) == 120  # a partition of the training file


def test_loader_accepts_lra_release_folder(demo, tmp_path):
    d = tmp_path / "lra" / "listops-1000"
    d.mkdir(parents=True)
    for split in ("train", "val", "test"):
        (d / f"basic_{split}.tsv").write_bytes((demo / f"basic_{split}.tsv").read_bytes())
    assert len(load_task("listops", tmp_path / "lra", max_len=32).test) == 30
    ref = tmp_path / "s4op-ref"  # the S4oP reference renames the files to {split}.tsv
    ref.mkdir()
    for split in ("train", "val", "test"):
        (ref / f"{split}.tsv").write_bytes((demo / f"basic_{split}.tsv").read_bytes())
    a, b = load_task("listops", ref, max_len=32), load_task("listops", demo, max_len=32)
    assert np.array_equal(a.val.x, b.val.x) and np.array_equal(a.test.y, b.test.y)


@pytest.mark.parametrize("row, needle", [
    ("( ( [MAX 2 ) 9 ] )\t12", "row 3: target"),
    ("( ( [MAX 2 ) 9 ] )", "row 3: expected 2"),
    ("( ( [FOO 2 ) 9 ] )\t3", "row 3: unknown token"),
])
def test_malformed_row_names_file_and_row(tmp_path, row, needle):
    for split in ("train", "val", "test"):
        (tmp_path / f"basic_{split}.tsv").write_text("Source\tTarget\n( ( [MIN 1 ) 2 ] )\t1\n")
    (tmp_path / "basic_train.tsv").write_text(f"Source\tTarget\n( ( [MIN 1 ) 2 ] )\t1\n{row}\n")
    with pytest.raises(DataError, match=needle) as err:
        load_task("listops", tmp_path)
    assert "basic_train.tsv" in str(err.value) and "\n" not in str(err.value)


def test_missing_folder_file_and_header(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_task("listops", tmp_path / "nope")
    with pytest.raises(DataError, match="basic_train.tsv"):
        load_task("listops", tmp_path)
    for split in ("train", "val", "test"):
        (tmp_path / f"basic_{split}.tsv").write_text("src\ttgt\n")
    with pytest.raises(DataError, match="header"):
        load_task("listops", tmp_path)


def test_bad_options_and_impossible_bounds(tmp_path):
    with pytest.raises(DataError, match="max_arg"):
        generate_task("listops", tmp_path / "a", size=SIZE, options={"max_arg": 3})
    with pytest.raises(DataError, match="min_len"):
        generate_task("listops", tmp_path / "b", size=SIZE, options={"min_len": 10, "max_len": 11})
    assert not (tmp_path / "a").exists() and not list(tmp_path.glob(".*tmp*"))


def test_generation_time_grows_linearly_with_the_number_of_examples(tmp_path):
    """Demo-size generation stays fast: 4x the examples (demo lengths 50..250) takes well under 8x
    the time (linear, no rejection-sampling blow-up), best of 2 interleaved runs each."""
    import time

    def seconds(scale: int, run: int) -> float:
        t0 = time.perf_counter()
        generate_task("listops", tmp_path / f"s{scale}-{run}", size={"train": 60 * scale, "val": 10 * scale,
                                                                     "test": 10 * scale},
                      options={"min_len": 50, "max_len": 250})
        return time.perf_counter() - t0

    small, large = [], []
    for run in range(2):
        small.append(seconds(1, run))
        large.append(seconds(4, run))
    assert min(large) / min(small) < 8.0
