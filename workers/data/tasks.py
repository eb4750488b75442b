"""What each task is, and the plain-array splits every loader returns.

A task is described by `TaskInfo` (input kind, d_input, classes, metric, default length L). A
loaded task is `TaskSplits(train, val, test, info)`, each split an `ArraySplit(x, lengths, y)`:

- x: `(n L)` int64 token ids (0 = padding) for token tasks, `(n L C)` float32 for real inputs;
- lengths: `(n,)` int64, the real length of each sequence before padding (>= 1);
- y: `(n,)` int64 class ids, or `(n c)` float32 0/1 labels for multi-label tasks;
- full_lengths: `(n,)` int64, each sequence's length in the files, before any truncation to L.

L is `max_len` when given, else the longest sequence in the data (nothing is cut). When `max_len`
cuts sequences, `truncation_notes` says so once per split (how many, the longest length).

This module also holds the helpers shared by the four task modules: padding to L, the seeded
validation carve-out, option checking and the write-to-a-temp-folder-then-rename of generators.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from search_spaces.errors import DataError


@dataclass(frozen=True)
class TaskInfo:
    """A task's fixed facts: how inputs look (tokens or real channels) and how it is scored."""

    name: str
    input_kind: str  # "tokens" | "real"
    d_input: int  # vocabulary size (tokens, padding included) or channel count C (real)
    n_classes: int  # classes, or labels for multi-label tasks
    multilabel: bool
    metric: str  # "accuracy" | "macro_f1"
    default_len: int  # L when the caller gives no max_len
    labels: tuple[str, ...] = ()  # label names, multi-label tasks only


ECG_LABELS = ("1dAVb", "RBBB", "LBBB", "SB", "AF", "ST")

TASKS: dict[str, TaskInfo] = {
    "listops": TaskInfo("listops", "tokens", 18, 10, False, "accuracy", 2048),
    "pathfinder": TaskInfo("pathfinder", "real", 1, 2, False, "accuracy", 1024),
    "imdb": TaskInfo("imdb", "tokens", 257, 2, False, "accuracy", 4096),
    "ecg": TaskInfo("ecg", "real", 12, 6, True, "macro_f1", 4096, ECG_LABELS),
}

# Generator options per task, exactly the keys of the presets' `task.generate.options`.
OPTIONS: dict[str, tuple[str, ...]] = {
    "listops": ("min_len", "max_len", "max_depth", "max_args"),
    "pathfinder": ("resolution", "contour_length", "n_distractors"),
    "imdb": ("min_words", "max_words"),
    "ecg": ("n_samples", "fs"),
}


def task_info(name: str) -> TaskInfo:
    """The `TaskInfo` of task `name`; an unknown name is a `DataError` listing the known ones."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise DataError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}") from None


@dataclass
class ArraySplit:
    """One split: x `(n L)` int64 or `(n L C)` float32, lengths `(n,)` int64, y `(n,)` or `(n c)`."""

    x: np.ndarray
    lengths: np.ndarray
    y: np.ndarray
    full_lengths: np.ndarray | None = None  # (n,) before truncation; None: same as lengths

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def take(self, index: np.ndarray) -> "ArraySplit":
        """The rows `index` of this split, as a new split."""
        full = None if self.full_lengths is None else self.full_lengths[index]
        return ArraySplit(self.x[index], self.lengths[index], self.y[index], full)

    def original_lengths(self) -> np.ndarray:
        """`(n,)` each sequence's length in the files (before truncation to L)."""
        return self.lengths if self.full_lengths is None else self.full_lengths


@dataclass
class TaskSplits:
    """train / val / test splits of one task, with its `TaskInfo`."""

    train: ArraySplit
    val: ArraySplit
    test: ArraySplit
    info: TaskInfo


# --- shared helpers -------------------------------------------------------------------------------


def resolve_len(info: TaskInfo, max_len: int | None, longest: int | None = None) -> int:
    """L: `max_len` if given (a positive int), else the longest sequence in the data (`longest`),
    else (nothing known about the data) the task's default length."""
    if max_len is None:
        return max(int(longest), 1) if longest is not None else info.default_len
    if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or max_len < 1:
        raise DataError(f"max_len={max_len!r} for task {info.name} must be a positive integer")
    return int(max_len)


def token_split(seqs: list[np.ndarray], y, L: int) -> ArraySplit:
    """An `ArraySplit` of token sequences padded or truncated to L, with their lengths in the files."""
    x, lengths = pad_tokens(seqs, L)  # (n L), (n,)
    full = np.asarray([max(len(s), 1) for s in seqs], dtype=np.int64)  # (n,)
    return ArraySplit(x, lengths, np.asarray(y, dtype=np.int64), full)


def longest_of(*seq_lists: list) -> int | None:
    """The longest sequence over several lists of sequences (None when all are empty)."""
    lengths = [len(s) for seqs in seq_lists for s in seqs]
    return max(lengths) if lengths else None


def pad_tokens(seqs: list[np.ndarray], L: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad (or truncate) token sequences to L. Returns x `(n L)` int64, lengths `(n,)`."""
    n = len(seqs)
    x = np.zeros((n, L), dtype=np.int64)  # (n L)
    lengths = np.zeros(n, dtype=np.int64)  # (n,)
    for i, s in enumerate(seqs):
        k = min(len(s), L)
        x[i, :k] = s[:k]
        lengths[i] = max(k, 1)
    return x, lengths


def fit_len(x: np.ndarray, L: int) -> np.ndarray:
    """Truncate or zero-pad real sequences `(n L0 C)` along time to `(n L C)` float32."""
    n, L0, C = x.shape
    if L0 >= L:
        return np.ascontiguousarray(x[:, :L], dtype=np.float32)  # (n L C)
    out = np.zeros((n, L, C), dtype=np.float32)  # (n L C)
    out[:, :L0] = x
    return out


def carve(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split rows 0..n-1 into (kept, carved) index arrays; round(fraction * n) carved, seeded.

    At least one row stays on each side when n >= 2, so neither split comes back empty.
    """
    if not (isinstance(fraction, (int, float)) and 0.0 < float(fraction) < 1.0):
        raise DataError(f"val_fraction={fraction!r} must be a number strictly between 0 and 1")
    k = int(round(float(fraction) * n))
    if n >= 2:
        k = min(max(k, 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)  # (n,)
    return np.sort(perm[k:]), np.sort(perm[:k])


def split_val(train: ArraySplit, fraction: float, seed: int) -> tuple[ArraySplit, ArraySplit]:
    """Carve `fraction` of `train` as validation with `seed` (deterministic)."""
    kept, carved = carve(len(train), fraction, seed)
    return train.take(kept), train.take(carved)


def in_test_split(key: str, fraction: float) -> bool:
    """Whether the example named `key` belongs to a hash-based test split of size ~`fraction`.

    Depends only on the key, so adding or removing other examples never moves an example across.
    """
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return h / 2.0**64 < fraction


def test_mask(keys: list[str], fraction: float) -> np.ndarray:
    """`(n,)` bool: which examples form the test split (`in_test_split`), never all nor none for n >= 2."""
    mask = np.array([in_test_split(k, fraction) for k in keys], dtype=bool)  # (n,)
    if len(keys) >= 2 and not mask.any():
        mask[int(np.argmin([hashlib.sha256(k.encode()).digest() for k in keys]))] = True
    if len(keys) >= 2 and mask.all():
        mask[int(np.argmax([hashlib.sha256(k.encode()).digest() for k in keys]))] = False
    return mask


def check_options(task: str, options: Mapping | None) -> dict:
    """`options` as a dict, every key one the task's generator knows (else one-line DataError)."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise DataError(f"generate options for task {task} must be a mapping, got {options!r}")
    known = OPTIONS[task]
    for key in options:
        if key not in known:
            raise DataError(f"unknown generate option {key!r} for task {task}; expected one of {', '.join(known)}")
    return dict(options)


def int_option(task: str, options: dict, key: str, default: int, *, lo: int = 1, hi: int | None = None) -> int:
    """Integer option `key` (default `default`), checked to lie in [lo, hi]."""
    value = options.get(key, default)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= lo
    if ok and hi is not None:
        ok = value <= hi
    if not ok:
        bounds = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise DataError(f"generate option {key}={value!r} for task {task} must be an integer {bounds}")
    return int(value)


def split_sizes(task: str, size: Mapping | None, default: dict[str, int]) -> dict[str, int]:
    """{train, val, test} counts from `size` (missing keys take the task's defaults)."""
    out = dict(default)
    if size is None:
        return out
    if not isinstance(size, Mapping):
        raise DataError(f"size for task {task} must be a mapping of train/val/test counts, got {size!r}")
    for key, value in size.items():
        if key not in out:
            raise DataError(f"unknown size key {key!r} for task {task}; expected train, val, test")
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise DataError(f"size {key}={value!r} for task {task} must be a non-negative integer")
        out[key] = int(value)
    if out["train"] < 1:
        raise DataError(f"size train={out['train']} for task {task} must be at least 1")
    return out


def write_atomically(out_dir, write: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Run `write(tmp)` in a temp folder beside `out_dir`, then rename it to `out_dir`.

    A non-empty `out_dir` is refused unless `overwrite`; a failed write leaves nothing behind.
    """
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise DataError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DataError(f"output folder {out} is not empty; choose an empty folder or pass --force")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        write(tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "data")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def require_dir(path: Path, what: str) -> Path:
    """`path` if it is a folder, else a DataError naming it and what it should hold."""
    if not path.is_dir():
        raise DataError(f"data folder {path} not found (expected {what})")
    return path


def truncation_report(splits: TaskSplits) -> list[dict]:
    """Per split that `L` cuts: {split, L, truncated, n, longest} (empty when nothing is cut)."""
    L = int(splits.train.x.shape[1])
    out = []
    for name in ("train", "val", "test"):
        s: ArraySplit = getattr(splits, name)
        full = s.original_lengths()
        cut = int((full > L).sum())
        if cut:
            out.append({"split": name, "L": L, "truncated": cut, "n": len(s), "longest": int(full.max())})
    return out


def truncation_notes(splits: TaskSplits) -> list[str]:
    """One line per split whose sequences `max_len` truncates (see `truncation_report`)."""
    unit = "tokens" if splits.info.input_kind == "tokens" else "steps"
    return [f"note: task.max_len={r['L']} truncates {r['truncated']:,} of {r['n']:,} {r['split']} sequences "
            f"(longest {r['longest']:,} {unit}); max_len: null keeps them whole"
            for r in truncation_report(splits)]


def summarize(splits: TaskSplits) -> dict:
    """Sizes, lengths and label distribution of each split, its majority baseline, and what L cuts.

    `majority_rate` of a split is `workers.metrics.majority_baseline` (train's most frequent class,
    or each label's train-majority value, scored on the split with the task metric; the definition
    is `majority_definition`), the same figure `s4op train` prints; for multi-label tasks also the
    `positive_rate` per label. `truncated` lists the splits that `max_len` cuts.
    """
    from workers.metrics import MAJORITY_BASELINE, majority_baseline

    info = splits.info
    out: dict = {"task": info.name, "metric": info.metric, "L": int(splits.train.x.shape[1]), "splits": {},
                 "input_kind": info.input_kind, "d_input": info.d_input, "n_classes": info.n_classes,
                 "multilabel": info.multilabel,
                 "longest": max(int(getattr(splits, k).original_lengths().max(initial=0)) for k in ("train", "val", "test")),
                 "majority_definition": MAJORITY_BASELINE, "truncated": truncation_report(splits)}
    if not info.multilabel and len(splits.train):
        out["majority_class"] = int(np.bincount(splits.train.y, minlength=info.n_classes).argmax())
    for name in ("train", "val", "test"):
        s: ArraySplit = getattr(splits, name)
        n = len(s)
        d: dict = {"n": n}
        if n:
            full = s.original_lengths()
            d["length_min"] = int(full.min())
            d["length_mean"] = round(float(full.mean()), 1)
            d["length_max"] = int(full.max())
        if info.multilabel:
            names = info.labels or tuple(str(i) for i in range(info.n_classes))
            rates = s.y.mean(axis=0) if n else np.zeros(info.n_classes)  # (c,)
            d["positive_rate"] = {k: round(float(r), 4) for k, r in zip(names, rates)}
            d["no_label_rate"] = round(float((s.y.sum(axis=1) == 0).mean()), 4) if n else 0.0
        else:
            counts = np.bincount(s.y, minlength=info.n_classes) if n else np.zeros(info.n_classes, int)
            d["class_counts"] = [int(c) for c in counts]
        baseline = majority_baseline(splits.train.y, s.y, multilabel=info.multilabel) if n else float("nan")
        d["majority_rate"] = round(baseline, 4) if baseline == baseline else 0.0
        out["splits"][name] = d
    return out
