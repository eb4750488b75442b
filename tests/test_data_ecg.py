"""ECG: CODE-15% layout (hdf5 + exams.csv), honest rhythm labels, exam_id matching, bad files."""

import csv
import shutil

import h5py
import numpy as np
import pytest

from search_spaces.errors import DataError
from workers.data import generate_task, load_task, task_info
from workers.data import ecg

N = 24


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return generate_task("ecg", tmp_path_factory.mktemp("ecg") / "d", size={"train": 16, "val": 4, "test": 4}, seed=0)


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _copy(demo, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(demo, dst)
    return dst


def test_code15_layout(demo):
    rows = _csv(demo / "exams.csv")
    assert list(rows[0]) == list(ecg.CSV_COLUMNS)
    assert len(rows) == N
    with h5py.File(demo / "exams_part0.hdf5", "r") as f:
        assert f["tracings"].shape == (N + 1, 4096, 12) and f["tracings"].dtype == np.float32
        ids = f["exam_id"][()]
        assert ids[-1] == 0 and not f["tracings"][-1].any()  # the release's trailing all-zero exam
    assert sorted(int(r["exam_id"]) for r in rows) == sorted(ids[:-1].tolist())
    for r in rows:
        assert r["1dAVb"] == r["RBBB"] == r["LBBB"] == "False"
        assert sum(r[k] == "True" for k in ("SB", "ST", "AF")) <= 1
        assert r["trace_file"] == "exams_part0.hdf5"


def _heart_rate(x, fs=400):
    """Mean heart rate (bpm) and RR irregularity (std/mean) of lead I, by R-peak detection."""
    from scipy.signal import find_peaks

    lead = x[:, 0] - np.median(x[:, 0])
    peaks, _ = find_peaks(lead, height=0.5 * lead.max(), distance=int(0.25 * fs))
    rr = np.diff(peaks) / fs
    return 60.0 / rr.mean(), rr.std() / rr.mean()


def test_labels_match_the_simulated_rhythm(tmp_path):
    out = generate_task("ecg", tmp_path / "d", size={"train": 40, "val": 0, "test": 0}, seed=0)
    labels = {int(r["exam_id"]): r for r in _csv(out / "exams.csv")}
    with h5py.File(out / "exams_part0.hdf5", "r") as f:
        x, ids = f["tracings"][()], f["exam_id"][()]
    seen = set()
    for tracing, exam_id in zip(x[:-1], ids[:-1]):
        r = labels[int(exam_id)]
        hr, irregularity = _heart_rate(tracing)
        if r["AF"] == "True":
            assert irregularity > 0.1, (exam_id, irregularity)
            seen.add("AF")
            continue
        assert irregularity < 0.08, (exam_id, irregularity)
        if r["SB"] == "True":
            assert hr < 60, hr
            seen.add("SB")
        elif r["ST"] == "True":
            assert hr > 100, hr
            seen.add("ST")
        else:
            assert 60 <= hr <= 100, hr
            seen.add("normal")
    assert seen == {"AF", "SB", "ST", "normal"}


def test_loader_splits_and_label_order(demo):
    info = task_info("ecg")
    s = load_task("ecg", demo, val_fraction=0.25, seed=0)
    assert len(s.train) + len(s.val) + len(s.test) == N and min(len(s.train), len(s.val), len(s.test)) >= 1
    assert s.train.x.shape[1:] == (4096, 12) and s.train.x.dtype == np.float32
    assert s.train.y.shape[1] == 6 and s.train.y.dtype == np.float32
    assert info.labels == ("1dAVb", "RBBB", "LBBB", "SB", "AF", "ST")
    rows = {int(r["exam_id"]): r for r in _csv(demo / "exams.csv")}
    with h5py.File(demo / "exams_part0.hdf5", "r") as f:
        x, ids = f["tracings"][()], f["exam_id"][()]
    y_all = np.concatenate([s.train.y, s.val.y, s.test.y])
    x_all = np.concatenate([s.train.x, s.val.x, s.test.x])
    for row_x, row_y in zip(x_all, y_all):
        j = int(np.flatnonzero((x[:-1] == row_x).all(axis=(1, 2)))[0])  # match the tracing back
        r = rows[int(ids[j])]
        assert row_y.tolist() == [float(r[k] == "True") for k in info.labels]
    short = load_task("ecg", demo, max_len=1000)
    assert short.train.x.shape[1] == 1000 and (short.train.lengths == 1000).all()


def test_test_split_is_stable_when_exams_are_added(demo, tmp_path):
    d = _copy(demo, tmp_path)
    a = load_task("ecg", d, max_len=16)
    rows = _csv(d / "exams.csv")
    with open(d / "exams.csv", "w", newline="") as f:  # drop a third of the csv rows
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows[: 2 * len(rows) // 3])
    b = load_task("ecg", d, max_len=16)
    keep = {r.tobytes() for r in b.train.x} | {r.tobytes() for r in b.val.x}
    assert not keep & {r.tobytes() for r in a.test.x}


def test_wrong_hdf5_shape_names_the_file(demo, tmp_path):
    d = _copy(demo, tmp_path)
    with h5py.File(d / "exams_part0.hdf5", "w") as f:
        f.create_dataset("tracings", data=np.zeros((3, 4096, 8), np.float32))
        f.create_dataset("exam_id", data=np.arange(3))
    with pytest.raises(DataError, match=r"exams_part0\.hdf5.*shape"):
        load_task("ecg", d)


def test_csv_without_label_column_or_bad_flag(demo, tmp_path):
    d = _copy(demo, tmp_path)
    text = (d / "exams.csv").read_text()
    (d / "exams.csv").write_text(text.replace(",AF,", ",af,", 1))
    with pytest.raises(DataError, match=r"exams\.csv has no column 'AF'"):
        load_task("ecg", d)
    lines = text.splitlines()
    lines[2] = lines[2].replace("False", "maybe", 1)
    (d / "exams.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="row 3"):
        load_task("ecg", d)


def test_code_test_set_is_the_test_split_when_present(demo, tmp_path):
    d = _copy(demo, tmp_path)
    x = np.random.default_rng(0).normal(size=(3, 4096, 12)).astype(np.float32)
    with h5py.File(d / "ecg_test.hdf5", "w") as f:
        f.create_dataset("tracings", data=x)
    with pytest.raises(DataError, match="gold_standard.csv not found"):
        load_task("ecg", d)
    (d / "gold_standard.csv").write_text("1dAVb,RBBB,LBBB,SB,AF,ST\n1,0,0,0,0,0\n0,0,1,0,0,1\n0,0,0,0,0,0\n")
    s = load_task("ecg", d, val_fraction=0.25)
    assert len(s.train) + len(s.val) == N and len(s.val) == 6
    assert np.array_equal(s.test.x, x)
    assert s.test.y.tolist() == [[1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 1], [0, 0, 0, 0, 0, 0]]
    (d / "gold_standard.csv").write_text("1dAVb,RBBB,LBBB,SB,AF,ST\n1,0,0,0,0,0\n")
    with pytest.raises(DataError, match="holds 3 tracings"):
        load_task("ecg", d)


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_task("ecg", tmp_path / "absent")
    (tmp_path / "exams.csv").write_text("exam_id,1dAVb,RBBB,LBBB,SB,AF,ST\n1,False,False,False,False,False,False\n")
    with pytest.raises(DataError, match="hdf5"):
        load_task("ecg", tmp_path)


def test_deterministic_per_seed(demo, tmp_path):
    from workers.data import fingerprint

    again = generate_task("ecg", tmp_path / "a", size={"train": 16, "val": 4, "test": 4}, seed=0)
    assert fingerprint(again) == fingerprint(demo)
    other = generate_task("ecg", tmp_path / "b", size={"train": 16, "val": 4, "test": 4}, seed=0,
                          options={"n_samples": 1000, "fs": 400})
    with h5py.File(other / "exams_part0.hdf5", "r") as f:
        assert f["tracings"].shape == (N + 1, 1000, 12)
    with pytest.raises(DataError, match="fs=50"):
        generate_task("ecg", tmp_path / "c", size={"train": 2}, options={"fs": 50})
