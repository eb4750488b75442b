"""12-lead ECG (CODE-15%): six abnormalities, multi-label, scored by macro-F1.

Layout (the CODE-15% release): `exams_part<k>.hdf5` files with datasets `tracings` `(N 4096 12)`
float32 (400 Hz, leads I, II, III, aVR, aVL, aVF, V1-V6) and `exam_id` `(N,)`, plus `exams.csv`
with columns exam_id, age, is_male, nn_predicted_age, 1dAVb, RBBB, LBBB, SB, ST, AF, patient_id,
death, timey, normal_ecg, trace_file; labels written True/False. Tracing rows are matched to csv
rows by exam_id; rows without a csv entry (the release pads each file with an all-zero exam 0)
are skipped. The release has no split: ~20 % of exams go to test by a hash of their exam_id and
`val_fraction` of the rest is carved out with the loader's seed; when the folder also holds the
annotated CODE-test set as the S4oP reference stores it (`ecg_test.hdf5` with `tracings`, and
`gold_standard.csv` with 0/1 columns 1dAVb, RBBB, LBBB, SB, AF, ST by row), that is the test split. y is `(n 6)` float32 in the
order 1dAVb, RBBB, LBBB, SB, AF, ST.

The generator writes synthetic exams in that layout with labels it can honestly produce: sinus
rhythm at 62-98 bpm (normal), sinus bradycardia at 40-57 bpm (SB), sinus tachycardia at 103-150
bpm (ST) and an AF-like rhythm (irregular RR, no P wave, fibrillatory waves; AF). 1dAVb, RBBB and
LBBB are always False. Beat shapes come from neurokit2's 12-lead simulator (`ecg_simulate`,
method "multileads"): a few records at 60 bpm are simulated once per seed, their averaged beat is
the template, and each exam strings templates along its own RR intervals (P-QRS-T scaled with
sqrt(RR), the T-P segment filling the rest), with per-lead gain, baseline wander and noise.
"""

from __future__ import annotations

import csv
import io
import math
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from search_spaces.errors import DataError
from workers.data.tasks import (
    ECG_LABELS,
    ArraySplit,
    TaskSplits,
    check_options,
    fit_len,
    int_option,
    require_dir,
    resolve_len,
    split_sizes,
    split_val,
    task_info,
    test_mask,
)

LEADS = 12
CSV_COLUMNS = ("exam_id", "age", "is_male", "nn_predicted_age", "1dAVb", "RBBB", "LBBB", "SB", "ST", "AF",
               "patient_id", "death", "timey", "normal_ecg", "trace_file")
TEST_FRACTION = 0.2
CODE_TEST = ("ecg_test.hdf5", "gold_standard.csv")  # the annotated CODE-test set, when present
PER_PART = 20000  # exams per exams_part<k>.hdf5
DEFAULT_SIZE = {"train": 800, "val": 0, "test": 200}
DEFAULTS = {"n_samples": 4096, "fs": 400}
RHYTHMS = ("normal", "SB", "ST", "AF")
RHYTHM_P = (0.4, 0.2, 0.2, 0.2)
HR_RANGE = {"normal": (62.0, 98.0), "SB": (40.0, 57.0), "ST": (103.0, 150.0), "AF": (70.0, 130.0)}
BEFORE, WAVES, AFTER = 0.3, 0.45, 0.7  # template spans s .. R+0.7 s; P-QRS-T ends at R+0.45 s
P_WAVE = (-0.28, -0.08)  # seconds around R holding the P wave (flattened for AF)


# --- generation -----------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def beat_template(fs: int, seed: int) -> np.ndarray:
    """One 12-lead beat at 60 bpm, `(S 12)` with S = fs samples from R-0.3 s, from neurokit2."""
    import neurokit2 as nk
    from scipy.signal import find_peaks

    sim = nk.ecg_simulate(duration=3.5, sampling_rate=fs, heart_rate=60, heart_rate_std=0.5,
                          noise=0.0, method="multileads", random_state=seed)
    sig = np.asarray(sim, dtype=np.float64)  # (T 12)
    if sig.ndim != 2 or sig.shape[1] != LEADS:  # pragma: no cover - older neurokit2 without multileads
        raise DataError(f"neurokit2 {nk.__version__} did not return 12 leads; ECG generation needs its 'multileads' method")
    lead1 = sig[:, 0]  # (T,) lead I: the clearest R waves of the simulator's leads
    peaks, _ = find_peaks(lead1, height=0.6 * lead1.max(), distance=int(0.5 * fs))
    a, b = int(BEFORE * fs), int(AFTER * fs)
    beats = [sig[p - a:p + b] for p in peaks if p - a >= 0 and p + b <= len(sig)]
    if not beats:  # pragma: no cover - defensive
        raise DataError("neurokit2 simulation yielded no complete beat for the ECG template")
    beat = np.mean(beats, axis=0)  # (S 12)
    return beat - np.median(beat[-int(0.15 * fs):], axis=0)  # isoelectric T-P level at 0


def rr_intervals(rng: np.random.Generator, rhythm: str, hr: float, total_s: float) -> np.ndarray:
    """RR intervals (seconds) covering `total_s` for a rhythm at mean heart rate `hr` (bpm)."""
    n = int(total_s * hr / 60.0 * 1.6) + 4
    if rhythm == "AF":
        rr = 60.0 / hr * np.exp(rng.normal(0.0, 0.25, size=n))  # (n,) irregularly irregular
        rr = np.clip(rr, 0.3, 2.0)
    else:
        rr = 60.0 / hr * (1.0 + rng.normal(0.0, 0.02, size=n))  # (n,) sinus: nearly regular
    return rr


def compose(rng: np.random.Generator, template: np.ndarray, rr: np.ndarray, fs: int, n_samples: int,
            af: bool) -> np.ndarray:
    """A `(n_samples 12)` tracing: template beats warped to the RR intervals `rr` (seconds).

    Each beat maps output time to template time piecewise linearly: R-0.3 s .. R+0.45 s of the
    template (P-QRS-T) takes 0.75*w s with w = min(sqrt(RR), RR/0.8), the T-P segment the rest.
    """
    S = template.shape[0]
    tmpl = template.copy()  # (S 12)
    if af:  # no P wave: bridge the P segment linearly
        i0, i1 = (int((BEFORE + t) * fs) for t in P_WAVE)
        ramp = np.linspace(0.0, 1.0, i1 - i0)[:, None]  # (i1-i0 1)
        tmpl[i0:i1] = tmpl[i0] * (1 - ramp) + tmpl[i1] * ramp
    taus = []
    for r in rr:
        m = max(int(round(r * fs)), 2)
        w = min(math.sqrt(r), r / 0.8)
        t = np.arange(m) / fs  # (m,) seconds since beat start
        wave = (BEFORE + WAVES) * w
        tau = np.where(t < wave, t / w,
                       BEFORE + WAVES + (t - wave) / max(r - wave, 1e-6) * (AFTER - WAVES))  # (m,)
        taus.append(tau)
    tau = np.concatenate(taus) * fs  # (T,) template sample positions
    start = int(rng.integers(0, max(1, int(rr[0] * fs))))
    tau = tau[start:start + n_samples]  # (n_samples,)
    lo = np.clip(np.floor(tau).astype(int), 0, S - 1)  # (n_samples,)
    hi = np.minimum(lo + 1, S - 1)
    frac = (tau - np.floor(tau))[:, None]  # (n_samples 1)
    x = tmpl[lo] * (1 - frac) + tmpl[hi] * frac  # (n_samples 12)
    t = np.arange(n_samples)[:, None] / fs  # (n_samples 1)
    gain = rng.normal(1.0, 0.1, size=(1, LEADS))  # (1 12)
    wander = 0.1 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 2 * np.pi))  # (n_samples 1)
    x = x * gain + wander * rng.normal(1.0, 0.3, size=(1, LEADS))
    if af:  # fibrillatory waves, 4-8 Hz
        f = rng.uniform(4.0, 8.0)
        x = x + 0.05 * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi, size=(1, LEADS)))
    x = x + rng.normal(0.0, 0.015, size=x.shape)  # (n_samples 12)
    return x.astype(np.float32)


def _bool(v: bool) -> str:
    return "True" if v else "False"


def generate(out: Path, *, size=None, seed: int = 0, options=None) -> None:
    """Write `exams.csv` and `exams_part<k>.hdf5` (CODE-15% layout) into `out`.

    The release has no split, so the exam count is train + val + test; the loader splits.
    """
    import h5py

    opts = check_options("ecg", options)
    n_samples = int_option("ecg", opts, "n_samples", DEFAULTS["n_samples"], lo=64)
    fs = int_option("ecg", opts, "fs", DEFAULTS["fs"], lo=100, hi=2000)
    sizes = split_sizes("ecg", size, DEFAULT_SIZE)
    n = sum(sizes.values())
    rng = np.random.default_rng(seed)
    templates = [beat_template(fs, seed * 2 + k) for k in range(2)]
    ids = np.sort(rng.choice(np.arange(100000, 100000 + 20 * n), size=n, replace=False))  # (n,)
    rows = []
    for part, begin in enumerate(range(0, n, PER_PART)):
        chunk = ids[begin:begin + PER_PART]
        tracings = np.zeros((len(chunk) + 1, n_samples, LEADS), dtype=np.float32)  # (N+1 L 12)
        for j, exam_id in enumerate(chunk):
            rhythm = RHYTHMS[int(rng.choice(len(RHYTHMS), p=RHYTHM_P))]
            hr = float(rng.uniform(*HR_RANGE[rhythm]))
            rr = rr_intervals(rng, rhythm, hr, n_samples / fs)
            tmpl = templates[int(rng.integers(len(templates)))]
            tracings[j] = compose(rng, tmpl, rr, fs, n_samples, af=rhythm == "AF")
            age = int(rng.integers(18, 95))
            rows.append({
                "exam_id": int(exam_id), "age": age, "is_male": _bool(rng.random() < 0.5),
                "nn_predicted_age": round(age + float(rng.normal(0, 8)), 2),
                "1dAVb": "False", "RBBB": "False", "LBBB": "False",
                "SB": _bool(rhythm == "SB"), "ST": _bool(rhythm == "ST"), "AF": _bool(rhythm == "AF"),
                "patient_id": int(rng.integers(1, 10**6)), "death": "", "timey": "",
                "normal_ecg": _bool(rhythm == "normal"), "trace_file": f"exams_part{part}.hdf5",
            })
        with h5py.File(out / f"exams_part{part}.hdf5", "w") as f:
            f.create_dataset("tracings", data=tracings)
            f.create_dataset("exam_id", data=np.append(chunk, 0).astype(np.int64))  # trailing all-zero exam 0
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (out / "exams.csv").write_text(buf.getvalue(), encoding="utf-8")


# --- loading --------------------------------------------------------------------------------------


def _flag(value: str, path: Path, row: int, column: str) -> float:
    v = value.strip().lower()
    if v in ("true", "1", "1.0"):
        return 1.0
    if v in ("false", "0", "0.0"):
        return 0.0
    raise DataError(f"ECG labels {path} row {row}: column {column} is {value[:20]!r}; expected True or False")


def read_labels(path: Path) -> dict[int, np.ndarray]:
    """exam_id -> `(6,)` float32 labels (1dAVb, RBBB, LBBB, SB, AF, ST) from exams.csv."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"ECG labels {path} not found") from None
    except OSError as exc:
        raise DataError(f"cannot read ECG labels {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DataError(f"ECG labels {path} is not UTF-8 text") from None
    try:
        reader = csv.DictReader(io.StringIO(text))
        header = reader.fieldnames or []
        for column in ("exam_id", *ECG_LABELS):
            if column not in header:
                raise DataError(f"ECG labels {path} has no column {column!r} (needs exam_id, {', '.join(ECG_LABELS)})")
        labels: dict[int, np.ndarray] = {}
        for row, rec in enumerate(reader, start=2):
            raw = (rec.get("exam_id") or "").strip()
            try:
                exam_id = int(float(raw))
            except (ValueError, OverflowError):
                raise DataError(f"ECG labels {path} row {row}: exam_id {raw[:20]!r} is not an integer") from None
            labels[exam_id] = np.array([_flag(rec.get(c) or "", path, row, c) for c in ECG_LABELS], dtype=np.float32)
    except csv.Error as exc:
        raise DataError(f"ECG labels {path} is not valid CSV ({exc})") from None
    return labels


def _part_key(p: Path):
    m = re.search(r"(\d+)$", p.stem)
    return (int(m.group(1)) if m else -1, p.name)


def read_part(path: Path, labels: dict[int, np.ndarray], L: int) -> tuple[list[int], np.ndarray, int]:
    """exam ids (with labels), tracings `(m L 12)` and the file's length L0, of one hdf5 part."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "tracings" not in f or "exam_id" not in f:
                raise DataError(f"ECG file {path} lacks dataset 'tracings' or 'exam_id'")
            tr, ex = f["tracings"], f["exam_id"]
            if not isinstance(tr, h5py.Dataset) or not isinstance(ex, h5py.Dataset):
                raise DataError(f"ECG file {path}: 'tracings' and 'exam_id' must be datasets")
            if tr.ndim != 3 or tr.shape[2] != LEADS or tr.shape[1] < 1:
                raise DataError(f"ECG file {path}: tracings has shape {tr.shape}; expected (N, 4096, 12)")
            if ex.shape != (tr.shape[0],):
                raise DataError(f"ECG file {path}: exam_id has shape {ex.shape}; expected ({tr.shape[0]},)")
            if ex.dtype.kind not in "iuf" or tr.dtype.kind != "f":
                raise DataError(f"ECG file {path}: exam_id must be integers and tracings floats")
            ids = np.asarray(ex[()]).astype(np.int64)  # (N,)
            rows = np.flatnonzero([int(i) in labels for i in ids])  # (m,)
            out = np.zeros((len(rows), L, LEADS), dtype=np.float32)  # (m L 12)
            for s in range(0, len(rows), 1000):
                idx = rows[s:s + 1000]
                out[s:s + len(idx)] = fit_len(np.asarray(tr[idx[0]:idx[-1] + 1], dtype=np.float32)[idx - idx[0]], L)
            return [int(ids[r]) for r in rows], out, int(tr.shape[1])
    except DataError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError) as exc:
        raise DataError(f"ECG file {path} is not a readable hdf5 file ({type(exc).__name__})") from None


def tracing_length(path: Path) -> int:
    """Samples per tracing in an ECG hdf5 file (dimension 1 of `tracings`); 0 when unreadable
    (reading the file properly then names the problem)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            tr = f.get("tracings")
            return int(tr.shape[1]) if isinstance(tr, h5py.Dataset) and tr.ndim == 3 else 0
    except (OSError, KeyError, ValueError, RuntimeError, TypeError):
        return 0


def read_code_test(tracings: Path, gold: Path, L: int) -> ArraySplit:
    """The annotated CODE-test set: `tracings` `(N 4096 12)` in `ecg_test.hdf5`, labels by row in
    `gold_standard.csv` (columns 1dAVb, RBBB, LBBB, SB, AF, ST; 0/1)."""
    import h5py

    try:
        text = gold.read_bytes().decode("utf-8-sig")
        rows = list(csv.DictReader(io.StringIO(text)))
        header = list(rows[0]) if rows else (text.splitlines() or [""])[0].split(",")
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"ECG test labels {gold} is not a readable CSV file ({type(exc).__name__})") from None
    for column in ECG_LABELS:
        if column not in header:
            raise DataError(f"ECG test labels {gold} has no column {column!r} (needs {', '.join(ECG_LABELS)})")
    y = np.array([[_flag(r.get(c) or "", gold, i, c) for c in ECG_LABELS] for i, r in enumerate(rows, start=2)],
                 dtype=np.float32).reshape(-1, len(ECG_LABELS))  # (N 6)
    try:
        with h5py.File(tracings, "r") as f:
            tr = f.get("tracings")
            if not isinstance(tr, h5py.Dataset) or tr.ndim != 3 or tr.shape[2] != LEADS or tr.dtype.kind != "f":
                shape = getattr(tr, "shape", None)
                raise DataError(f"ECG test file {tracings}: tracings has shape {shape}; expected (N, 4096, 12) floats")
            if tr.shape[0] != len(y):
                raise DataError(f"ECG test file {tracings} holds {tr.shape[0]} tracings but {gold} has {len(y)} rows")
            x = fit_len(np.asarray(tr[()], dtype=np.float32), L)  # (N L 12)
            L0 = int(tr.shape[1])
    except DataError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError) as exc:
        raise DataError(f"ECG test file {tracings} is not a readable hdf5 file ({type(exc).__name__})") from None
    return ArraySplit(x, np.full(len(y), min(L, L0), dtype=np.int64), y, np.full(len(y), L0, dtype=np.int64))


def load(data_dir, *, max_len=None, val_fraction: float = 0.2, seed: int = 0) -> TaskSplits:
    """Load CODE-15% style ECG exams from `data_dir` as x `(n L 12)` float32, y `(n 6)`.

    When the folder also holds the annotated CODE-test set (`ecg_test.hdf5` + `gold_standard.csv`,
    as in the S4oP reference setup), that is the test split and all CODE-15% exams go to
    train/val; otherwise ~20 % of the exams form the test split by a hash of their exam_id.
    """
    info = task_info("ecg")
    root = require_dir(Path(data_dir), "exams.csv and exams_part<k>.hdf5")
    labels = read_labels(root / "exams.csv")
    parts = sorted(root.glob("exams_part*.hdf5"), key=_part_key) or \
        sorted((p for p in root.glob("*.hdf5") if p.name != CODE_TEST[0]), key=_part_key)
    if not parts:
        raise DataError(f"ECG folder {root} holds no exams_part<k>.hdf5 files")
    tracings, gold = root / CODE_TEST[0], root / CODE_TEST[1]
    L = resolve_len(info, max_len, None if max_len is not None else
                    max(tracing_length(p) for p in [*parts, tracings] if p.is_file()))
    ids, xs, lens, seen = [], [], [], set()
    for p in parts:
        part_ids, x, L0 = read_part(p, labels, L)
        keep = [j for j, i in enumerate(part_ids) if i not in seen]
        seen.update(part_ids)
        ids += [part_ids[j] for j in keep]
        xs.append(x[keep])
        lens += [L0] * len(keep)
    if not ids:
        raise DataError(f"ECG folder {root}: no exam_id in the hdf5 files matches a row of {root / 'exams.csv'}")
    x = np.concatenate(xs)  # (n L 12)
    y = np.stack([labels[i] for i in ids])  # (n 6)
    full = np.asarray(lens, dtype=np.int64)  # (n,) lengths in the files
    every = ArraySplit(x, np.minimum(full, L), y, full)
    if tracings.is_file() or gold.is_file():
        if not (tracings.is_file() and gold.is_file()):
            missing = gold if tracings.is_file() else tracings
            raise DataError(f"ECG test set incomplete: {missing} not found (CODE-test needs {' and '.join(CODE_TEST)})")
        train, val = split_val(every, val_fraction, seed)
        return TaskSplits(train, val, read_code_test(tracings, gold, L), info)
    test = test_mask([str(i) for i in ids], TEST_FRACTION)  # (n,)
    train, val = split_val(every.take(np.flatnonzero(~test)), val_fraction, seed)
    return TaskSplits(train, val, every.take(np.flatnonzero(test)), info)
