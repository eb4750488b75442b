"""Loaders on garbage: truncated or random TSV, PNG, HDF5, CSV bytes either load or raise DataError."""

import os
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search_spaces.errors import DataError
from workers.data import generate_task, load_task

EXAMPLES = int(os.environ.get("S4OP_FUZZ_EXAMPLES", "25"))  # raise it for a deeper run
NOISE = st.one_of(st.binary(max_size=40), st.text(max_size=20).map(lambda t: t.encode("utf-8")))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def listops_dir(tmp_path_factory):
    return generate_task("listops", tmp_path_factory.mktemp("fz") / "lo", size={"train": 5, "val": 2, "test": 2},
                         options={"min_len": 5, "max_len": 30})


@pytest.fixture(scope="module")
def pathfinder_dir(tmp_path_factory):
    return generate_task("pathfinder", tmp_path_factory.mktemp("fz") / "pf", size={"train": 4, "val": 0, "test": 0})


def _mangle(data: bytes, cut: float, noise: bytes) -> bytes:
    """Truncate `data` at a fraction `cut` and splice `noise` in there."""
    k = int(len(data) * cut)
    return data[:k] + noise + data[k + len(noise):]


def _loads_or_data_error(task, folder, **kw):
    try:
        load_task(task, folder, **kw)
    except DataError as exc:
        assert "\n" not in str(exc)


@FUZZ
@given(cut=st.floats(0, 1), noise=NOISE)
def test_listops_tsv(listops_dir, tmp_path_factory, cut, noise):
    d = tmp_path_factory.mktemp("lo")
    shutil.copytree(listops_dir, d, dirs_exist_ok=True)
    p = d / "basic_train.tsv"
    p.write_bytes(_mangle(p.read_bytes(), cut, noise))
    _loads_or_data_error("listops", d, max_len=32)


@FUZZ
@given(cut=st.floats(0, 1), noise=NOISE)
def test_pathfinder_png_and_metadata(pathfinder_dir, tmp_path_factory, cut, noise):
    d = tmp_path_factory.mktemp("pf")
    shutil.copytree(pathfinder_dir, d, dirs_exist_ok=True)
    root = d / "pathfinder32" / "curv_contour_length_14"
    png = root / "imgs" / "0" / "sample_1.png"
    png.write_bytes(_mangle(png.read_bytes(), cut, noise))
    _loads_or_data_error("pathfinder", d)
    meta = root / "metadata" / "0.npy"
    meta.write_bytes(_mangle(meta.read_bytes(), cut, noise))
    _loads_or_data_error("pathfinder", d)


@FUZZ
@given(cut=st.floats(0, 1), noise=st.binary(max_size=64), csv_noise=NOISE)
def test_ecg_hdf5_and_csv(tmp_path_factory, cut, noise, csv_noise):
    import h5py

    d = tmp_path_factory.mktemp("ecg")
    with h5py.File(d / "exams_part0.hdf5", "w") as f:
        f.create_dataset("tracings", data=np.ones((3, 16, 12), np.float32))
        f.create_dataset("exam_id", data=np.array([5, 6, 0]))
    (d / "exams.csv").write_text("exam_id,1dAVb,RBBB,LBBB,SB,ST,AF\n5,False,False,False,True,False,False\n"
                                 "6,False,False,False,False,False,True\n")
    load_task("ecg", d, max_len=16)  # the clean folder loads
    h5 = d / "exams_part0.hdf5"
    h5.write_bytes(_mangle(h5.read_bytes(), cut, noise))
    _loads_or_data_error("ecg", d, max_len=16)
    c = d / "exams.csv"
    c.write_bytes(_mangle(c.read_bytes(), cut, csv_noise))
    _loads_or_data_error("ecg", d, max_len=16)
