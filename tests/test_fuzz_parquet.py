"""Task parquet on garbage: garbled bytes and random tables either load or raise one-line DataError."""

import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search_spaces.errors import DataError
from workers.data import load_task

EXAMPLES = int(os.environ.get("S4OP_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("fzpq") / "good"
    out.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train", 12), ("test", 5)):
        x = [rng.normal(size=(int(k), 2)).astype(np.float32).tolist() for k in rng.integers(1, 9, n)]
        pq.write_table(pa.table({"x": x, "y": (np.arange(n) % 2).tolist()}), out / f"{name}.parquet", row_group_size=4)
    load_task("parquet", out)
    return out


def _loads_or_data_error(folder):
    try:
        splits = load_task("parquet", folder)
    except DataError as exc:
        assert "\n" not in str(exc) and ".parquet" in str(exc)
        return None
    assert len(splits.train) and len(splits.test)
    return splits


@FUZZ
@given(cut=st.floats(0, 1), noise=st.binary(max_size=40), which=st.sampled_from(["train", "test"]))
def test_garbled_file_loads_or_raises_data_error(tmp_path, good_dir, cut, noise, which):
    folder = tmp_path / "g"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(good_dir, folder)
    path = folder / f"{which}.parquet"
    data = path.read_bytes()
    k = int(len(data) * cut)
    path.write_bytes(data[:k] + noise + data[k + len(noise):])
    _loads_or_data_error(folder)


value = st.one_of(st.integers(-3, 5), st.floats(allow_nan=True, allow_infinity=True, width=32), st.none())
cell = st.one_of(value, st.lists(value, max_size=4), st.lists(st.lists(st.floats(width=32), max_size=3), max_size=3),
                 st.text(max_size=3))


@FUZZ
@given(xs=st.lists(cell, min_size=0, max_size=6), ys=st.lists(cell, min_size=0, max_size=6))
def test_random_tables_load_or_raise_data_error(tmp_path, good_dir, xs, ys):
    folder = tmp_path / "r"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(good_dir, folder)
    n = min(len(xs), len(ys))
    try:
        table = pa.table({"x": pa.array(xs[:n]), "y": pa.array(ys[:n])})
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        return  # not expressible as one Arrow column: nothing to write
    pq.write_table(table, folder / "test.parquet")
    _loads_or_data_error(folder)
