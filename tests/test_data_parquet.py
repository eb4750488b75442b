"""One's own data: task parquet (train/test/val.parquet, columns x and y) and task python (a loader).

Facts are read from the files, sequences are padded per batch with their real lengths, and every
bad input is one line naming the file, the column and the first bad row (exit 2 from the CLI).
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from search_spaces.config import config_from_yaml
from search_spaces.errors import ConfigError, DataError
from workers.batches import eval_batches, train_batches
from workers.data import load_task

ROOT = Path(__file__).resolve().parents[1]


def sequences(kind: str, n: int, seed: int = 0, C: int = 3):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 30, n)
    if kind == "tokens":
        return [rng.integers(0, 11, k) for k in lengths]
    if kind == "real1":
        return [rng.normal(size=k).astype(np.float32) for k in lengths]
    return [rng.normal(size=(k, C)).astype(np.float32) for k in lengths]


def write(path: Path, x, y, row_group_size: int = 5) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"x": [np.asarray(r).tolist() for r in x], "y": [np.asarray(v).tolist() for v in y]})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def folder(tmp_path, kind="real3", n=(40, 15), multilabel=False, val=None, classes=3):
    rng = np.random.default_rng(1)
    out = tmp_path / kind
    data = {}
    for name, m in zip(("train", "test", "val"), (*n, val or 0)):
        if name == "val" and not val:
            continue
        x = sequences(kind, m, seed=len(name))
        y = rng.integers(0, 2, (m, 4)) if multilabel else np.arange(m) % classes
        write(out / f"{name}.parquet", x, y)
        data[name] = (x, y)
    return out, data


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("kind,d_input", [("tokens", 11), ("real1", 1), ("real3", 3)])
def test_facts_are_read_from_the_files_and_batches_hold_the_real_rows(tmp_path, kind, d_input):
    out, data = folder(tmp_path, kind)
    splits = load_task("parquet", out, val_fraction=0.25, seed=3)
    info = splits.info
    assert (info.input_kind, info.n_classes, info.multilabel, info.metric) == \
        ("tokens" if kind == "tokens" else "real", 3, False, "accuracy")
    if kind == "tokens":
        assert info.d_input <= d_input and info.d_input == max(int(r.max()) for x, _ in data.values() for r in x) + 1
    else:
        assert info.d_input == d_input
    longest = max(len(r) for x, _ in data.values() for r in x)
    assert info.default_len == longest
    assert len(splits.train) + len(splits.val) == 40 and len(splits.val) == 10 and len(splits.test) == 15
    x_test, y_test = data["test"]
    seen = 0
    for batch in eval_batches(splits.test, 4):
        assert batch.x.shape[1] == int(batch.lengths.max())  # padded per batch, not to the longest row
        for b, row in enumerate(batch.index):
            k = len(x_test[row])
            assert int(batch.lengths[b]) == k
            expect = np.asarray(x_test[row]).reshape(k, -1) if kind != "tokens" else np.asarray(x_test[row])
            got = batch.x[b, :k].numpy()
            np.testing.assert_array_equal(got.reshape(expect.shape), expect)
            assert not batch.x[b, k:].any()  # zero padding after the real length
            assert int(batch.y[b]) == int(y_test[row])
            seen += 1
    assert seen == 15


def test_val_carve_out_is_seeded_and_max_len_caps_the_lengths(tmp_path):
    out, _ = folder(tmp_path, "tokens")
    a = load_task("parquet", out, val_fraction=0.2, seed=5, max_len=7)
    b = load_task("parquet", out, val_fraction=0.2, seed=5, max_len=7)
    c = load_task("parquet", out, val_fraction=0.2, seed=6, max_len=7)
    np.testing.assert_array_equal(a.val.y, b.val.y)
    assert not np.array_equal(a.val.x.starts, c.val.x.starts)
    assert int(a.train.lengths.max()) == 7 and a.train.x.shape[1] == 7
    batch = next(train_batches(a.train, 8, torch.Generator().manual_seed(0)))
    assert batch.x.shape[1] <= 7


def test_multilabel_with_val_file_scores_macro_f1_unless_the_metric_says_otherwise(tmp_path):
    out, data = folder(tmp_path, "real3", multilabel=True, val=6)
    splits = load_task("parquet", out)
    assert splits.info.multilabel and splits.info.n_classes == 4 and splits.info.metric == "macro_f1"
    assert len(splits.val) == 6 and splits.val.y.dtype == np.float32
    np.testing.assert_array_equal(splits.val.y, data["val"][1])
    assert load_task("parquet", out, metric="accuracy").info.metric == "accuracy"


def test_data_info_shows_sizes_lengths_balance_and_facts(tmp_path):
    out, _ = folder(tmp_path, "real3")
    r = run_cli("data", "info", "parquet", out)
    assert r.returncode == 0, r.stderr
    assert "input real, channels 3, 3 classes" in r.stdout
    assert "length min/mean/max" in r.stdout and "counts [" in r.stdout


def _bad(tmp_path, name, **table):
    out = tmp_path / name
    good_x = [np.ones(4, np.float32).tolist()] * 6
    write(out / "train.parquet", good_x, [0, 1, 0, 1, 0, 1])
    pq.write_table(pa.table(table), out / "test.parquet")
    return out


BAD = {
    "missing column": ({"x": [[1.0, 2.0]] * 3}, "test.parquet: column y, row 0: column missing"),
    "wrong type": ({"x": ["a", "b"], "y": [0, 1]}, "test.parquet: column x, row 0: type string"),
    "empty split": ({"x": pa.array([], pa.list_(pa.float32())), "y": pa.array([], pa.int64())},
                    "test.parquet: column x, row 0: empty split"),
    "label out of range": ({"x": [[1.0]] * 4, "y": [0, 1, 5, 7]}, "test.parquet: column y, row 2: label 5 out of range 0..1"),
    "negative label": ({"x": [[1.0]] * 3, "y": [0, -1, 1]}, "test.parquet: column y, row 1: label -1 is negative"),
    "mixed channels": ({"x": [[[1.0, 2.0]], [[1.0, 2.0], [3.0]]], "y": [0, 1]},
                       "test.parquet: column x, row 1: a step of 1 channels, but earlier steps have 2"),
    "channels differ from train": ({"x": [[[1.0, 2.0]]] * 2, "y": [0, 1]},
                                   "test.parquet: column x, row 0: 2 channel(s), but"),
    "non-finite": ({"x": [[1.0], [2.0, 3.0], [float("nan")]], "y": [0, 1, 0]},
                   "test.parquet: column x, row 2: non-finite value"),
    "empty sequence": ({"x": [[1.0], []], "y": [0, 1]}, "test.parquet: column x, row 1: empty sequence"),
    "null row": ({"x": [[1.0], None, [2.0]], "y": [0, 1, 0]}, "test.parquet: column x, row 1: missing sequence"),
    "tokens vs real": ({"x": [[1, 2]], "y": [0]}, "test.parquet: column x, row 0: tokens input, but"),
    "multi-label not 0 or 1": ({"x": [[1.0]] * 2, "y": [[0, 1], [2, 0]]},
                               "test.parquet: column y, row 1: multi-label values must be 0 or 1"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_naming_file_column_and_row(tmp_path, case):
    table, expected = BAD[case]
    out = _bad(tmp_path, case.replace(" ", "_"), **table)
    with pytest.raises(DataError) as info:
        load_task("parquet", out)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_bad_input_exits_2_from_the_cli(tmp_path):
    out = _bad(tmp_path, "cli", x=[[1.0], [float("inf")]], y=[0, 1])
    r = run_cli("data", "info", "parquet", out)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "test.parquet: column x, row 1: non-finite" in r.stderr
    (out / "test.parquet").unlink()
    r = run_cli("data", "info", "parquet", out)
    assert r.returncode == 2 and "test.parquet: missing split file" in r.stderr


def test_mixed_channels_across_row_groups_name_the_global_row(tmp_path):
    x = [np.ones((3, 2), np.float32)] * 7 + [np.ones((3, 3), np.float32)]
    out = tmp_path / "rg"
    write(out / "train.parquet", x, [0, 1] * 4, row_group_size=3)
    write(out / "test.parquet", x[:2], [0, 1])
    with pytest.raises(DataError, match=r"train.parquet: column x, row 7: a step of 3 channels"):
        load_task("parquet", out)


# ---- task python ----------------------------------------------------------------------------------

LOADER = '''
import numpy as np

def arrays(data_dir, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(30, 12, 2)).astype(np.float32)
    lengths = rng.integers(1, 13, 30)
    return (x, np.arange(30) % 2, lengths), None, (x[:8], np.arange(8) % 2)

def ragged(data_dir, seed):
    rows = [np.arange(1, k + 1) for k in range(1, 21)]
    return (rows, np.arange(20) % 4), (rows[:5], np.arange(5) % 4), (rows[5:9], np.arange(4) % 4)

def bad_label(data_dir, seed):
    rows = [np.arange(1, 4)] * 6
    return (rows, np.zeros(6, int) + np.arange(6) % 2), None, (rows[:3], np.array([0, 1, 3]))

def not_a_tuple(data_dir, seed):
    return {"train": 1}
'''


@pytest.fixture
def loader_module(tmp_path, monkeypatch):
    (tmp_path / "my_loaders.py").write_text(textwrap.dedent(LOADER))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_loaders", None)
    return "my_loaders"


def test_python_loader_arrays_with_lengths_and_ragged_lists(tmp_path, loader_module):
    s = load_task("python", tmp_path, loader=f"{loader_module}:arrays", seed=1, val_fraction=0.2)
    assert s.info.input_kind == "real" and s.info.d_input == 2 and s.info.n_classes == 2
    assert len(s.train) == 24 and len(s.val) == 6 and len(s.test) == 8
    assert s.train.lengths.max() <= 12 and s.train.lengths.min() >= 1
    r = load_task("python", tmp_path, loader=f"{loader_module}:ragged")
    assert r.info.input_kind == "tokens" and r.info.d_input == 21 and r.info.n_classes == 4
    assert r.info.default_len == 20 and len(r.val) == 5
    np.testing.assert_array_equal(r.test.x.padded([3])[0], np.arange(1, 10))


@pytest.mark.parametrize("fn,expected", [
    ("bad_label", "split test: column y, row 2: label 3 out of range 0..1"),
    ("not_a_tuple", "returned dict; expected function(data_dir: Path, seed: int)"),
    ("missing", "has no function missing"),
])
def test_python_loader_bad_returns_are_one_line(tmp_path, loader_module, fn, expected):
    with pytest.raises(DataError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_task("python", tmp_path, loader=f"{loader_module}:{fn}")


def test_config_task_section_for_own_data():
    cfg = config_from_yaml("name: a\ntask: {name: parquet, data_dir: /d, metric: macro_f1}\n")
    assert cfg.task.name == "parquet" and cfg.task.metric == "macro_f1"
    cfg = config_from_yaml("name: a\ntask: {name: python, data_dir: /d, loader: 'pkg.mod:load'}\n")
    assert cfg.task.loader == "pkg.mod:load"
    for text, key in [("{name: python, data_dir: /d}", "task.loader"),
                      ("{name: listops, data_dir: /d, metric: accuracy}", "task.metric"),
                      ("{name: parquet, data_dir: /d, loader: 'a:b'}", "task.loader"),
                      ("{name: parquet, data_dir: /d, generate: {train: 5}}", "task.generate")]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            config_from_yaml(f"name: a\ntask: {text}\n")
