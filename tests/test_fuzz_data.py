"""Data-loader fuzzing: truncated, garbled or replaced TSV, PNG, text, HDF5 and CSV files either load
or raise the project's own error type (an `S4opError`), never another exception.

The config loader is fuzzed in tests/test_config.py (test_fuzz_*); not repeated here.
"""

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search_spaces.errors import S4opError
from workers.data import generate_task, load_task

EXAMPLES = 30  # per task; FAULTS.md counts them


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
    st.tuples(st.just("replace"), st.binary(max_size=256)),
    st.tuples(st.just("text"), st.text(max_size=200)),
    st.tuples(st.just("delete")),
)


def _mutate(path: Path, m) -> None:
    data = path.read_bytes()
    if m[0] == "truncate":
        path.write_bytes(data[: int(len(data) * m[1])])
    elif m[0] == "garble":
        at = int(len(data) * m[1])
        path.write_bytes(data[:at] + m[2] + data[at + len(m[2]):])
    elif m[0] == "replace":
        path.write_bytes(m[1])
    elif m[0] == "text":
        path.write_bytes(m[1].encode("utf-8", "surrogatepass"))
    else:
        path.unlink()


def _check(name, folder, pick, m):
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "d"
        shutil.copytree(folder, copy)
        target = copy / files[pick % len(files)].relative_to(folder)
        _mutate(target, m)
        try:
            splits = load_task(name, copy, max_len=64)
        except S4opError as exc:
            assert "\n" not in str(exc)
            return
        for split in (splits.train, splits.val, splits.test):  # loaded: arrays agree with each other
            assert len(split.x) == len(split.lengths) == len(split.y)


@pytest.mark.parametrize("name", ["listops", "pathfinder", "imdb", "ecg"])
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          derandomize=True)
@given(pick=st.integers(0, 10_000), m=mutation)
def test_fuzz_corrupt_data_file_loads_or_raises_s4op_error(datasets, name, pick, m):
    _check(name, datasets[name], pick, m)
