"""Data-loader fuzzing: truncated, garbled or replaced TSV, PNG, text, HDF5 and CSV files either load
(with consistent arrays) or raise `DataError` with one line, never another exception.

Two ways in: any file of a task's folder picked at random, and the files each loader parses (the
ListOps TSV, a Pathfinder PNG and its metadata, the ECG HDF5 and CSV), so those are always hit.
The config loader is fuzzed in tests/test_config.py (test_fuzz_*); not repeated here.
"""

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search_spaces.errors import DataError
from workers.data import generate_task, load_task

EXAMPLES = int(os.environ.get("S4OP_FUZZ_EXAMPLES", "30"))  # per test case; FAULTS.md counts them; raise for a deeper run
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
                derandomize=True)


def _ecg(out: Path) -> Path:
    """A tiny valid CODE-15% layout written directly (the generator needs neurokit2 and ~10 s)."""
    import h5py

    out.mkdir(parents=True)
    ids = [100003 + 6 * i for i in range(8)]
    header = "exam_id,age,is_male,nn_predicted_age,1dAVb,RBBB,LBBB,SB,ST,AF,patient_id,death,timey,normal_ecg,trace_file"
    rows = [f"{e},60,False,61.0,False,False,False,{i % 2 == 0},False,{i % 3 == 0},{i},,,True,exams_part0.hdf5"
            for i, e in enumerate(ids)]
    (out / "exams.csv").write_text("\n".join([header, *rows]) + "\n")
    rng = np.random.default_rng(0)
    with h5py.File(out / "exams_part0.hdf5", "w") as f:
        f["tracings"] = rng.normal(size=(len(ids) + 1, 4096, 12)).astype(np.float32)  # (N 4096 12)
        f["exam_id"] = np.array(ids + [0], dtype=np.int64)  # the release pads with exam 0
    return out


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzzdata")
    sizes = {"train": 8, "val": 3, "test": 3}
    out = {name: generate_task(name, root / name, size=sizes, seed=0) for name in ("listops", "pathfinder", "imdb")}
    out["ecg"] = _ecg(root / "ecg")
    for name, folder in out.items():  # the untouched copies load
        load_task(name, folder, max_len=64)
    return out


mutation = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("garble"), st.floats(0, 1), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("garble"), st.floats(0, 1), st.text(min_size=1, max_size=20).map(lambda t: t.encode("utf-8"))),
    st.tuples(st.just("replace"), st.binary(max_size=256)),
    st.tuples(st.just("text"), st.text(max_size=200)),
    st.tuples(st.just("delete")),
)


def _mutate(path: Path, m) -> None:
    data = path.read_bytes()
    if m[0] == "truncate":
        path.write_bytes(data[: int(len(data) * m[1])])
    elif m[0] == "garble":  # splice bytes in at a fraction of the file
        at = int(len(data) * m[1])
        path.write_bytes(data[:at] + m[2] + data[at + len(m[2]):])
    elif m[0] == "replace":
        path.write_bytes(m[1])
    elif m[0] == "text":
        path.write_bytes(m[1].encode("utf-8", "surrogatepass"))
    else:
        path.unlink()


def _loads_or_data_error(name: str, folder: Path) -> None:
    try:
        splits = load_task(name, folder, max_len=64)
    except DataError as exc:
        assert "\n" not in str(exc)
        return
    for split in (splits.train, splits.val, splits.test):  # loaded: arrays agree with each other
        assert len(split.x) == len(split.lengths) == len(split.y)


def _check(name: str, folder: Path, targets: list[Path], m) -> None:
    """Mutate `targets` (paths inside `folder`, at least one) in a copy of `folder`, then load it."""
    assert targets, f"no file to mutate in {folder}"
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "d"
        shutil.copytree(folder, copy)
        for target in targets:
            _mutate(copy / target.relative_to(folder), m)
        _loads_or_data_error(name, copy)


@pytest.mark.parametrize("name", ["listops", "pathfinder", "imdb", "ecg"])
@FUZZ
@given(pick=st.integers(0, 10_000), m=mutation)
def test_fuzz_any_data_file_loads_or_raises_data_error(datasets, name, pick, m):
    files = sorted(p for p in datasets[name].rglob("*") if p.is_file())
    _check(name, datasets[name], [files[pick % len(files)]], m)


PARSED = {  # the files each loader parses, as a glob under the task folder (the first match is mutated)
    "listops-tsv": ("listops", "**/basic_train.tsv"),
    "pathfinder-png": ("pathfinder", "**/imgs/0/*.png"),
    "pathfinder-metadata": ("pathfinder", "**/metadata/0.npy"),
    "ecg-hdf5": ("ecg", "exams_part0.hdf5"),
    "ecg-csv": ("ecg", "exams.csv"),
}


@pytest.mark.parametrize("case", list(PARSED))
@FUZZ
@given(m=mutation)
def test_fuzz_parsed_file_loads_or_raises_data_error(datasets, case, m):
    name, pattern = PARSED[case]
    _check(name, datasets[name], sorted(datasets[name].glob(pattern))[:1], m)
