"""One's own data: splits read from files or a loader, checked, and turned into a `TaskSplits`.

Both doors (`workers.data.parquet`, `workers.data.python_loader`) produce a `RawSplit` per split:
flat `values` (T,) int64 tokens or (T C) float32, `offsets` (n+1,), and `y` (n,) int64 class ids or
(n c) 0/1 labels. `build_splits` checks them against each other (same kind of input, same channel
count, same label layout, labels of val/test within train's classes), reads the task's facts from
them (kind, vocabulary or channels, classes, longest length, metric) and returns ragged splits:
`ArraySplit(x=RaggedRows, lengths, y)`, padded per batch only.

Every problem is a `DataError` naming where (the file or the loader's split), the column and the
first bad row, e.g. `.../test.parquet: column y, row 17: label 9 out of range 0..4 (classes of
train.parquet)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from search_spaces.errors import DataError
from workers.data.ragged import RaggedRows
from workers.data.tasks import ArraySplit, TaskInfo, TaskSplits, resolve_len, split_val

METRICS = ("accuracy", "macro_f1")


@dataclass
class RawSplit:
    """One split as read: `where` names its source (a file path or `loader ... split train`)."""

    where: str
    kind: str  # "tokens" | "real"
    values: np.ndarray  # (T,) int64 tokens or (T C) float32 real values
    offsets: np.ndarray  # (n+1,) int64
    y: np.ndarray  # (n,) int64 or (n c) float32
    multilabel: bool

    def __len__(self) -> int:
        return int(self.offsets.shape[0] - 1)

    @property
    def channels(self) -> int:
        return int(self.values.shape[1]) if self.kind == "real" else 0


def bad(where: str, column: str, row: int, problem: str) -> DataError:
    """The one-line error: source, column, first bad row, what is wrong."""
    return DataError(f"{where}: column {column}, row {row}: {problem}")


def row_of(offsets: np.ndarray, position: int) -> int:
    """The row whose values hold flat `position`."""
    return int(np.searchsorted(offsets, position, side="right") - 1)


def check_values(where: str, kind: str, values: np.ndarray, offsets: np.ndarray, first_row: int = 0) -> None:
    """Every sequence non-empty; tokens >= 0; real values finite. Rows count from `first_row`."""
    lengths = np.diff(offsets)  # (n,)
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        raise bad(where, "x", first_row + int(empty[0]), "empty sequence (expected at least one step)")
    if kind == "tokens":
        neg = np.flatnonzero(values < 0)
        if neg.size:
            raise bad(where, "x", first_row + row_of(offsets, int(neg[0])), f"token {int(values[neg[0]])} is negative")
    else:
        finite = np.isfinite(values).reshape(values.shape[0], -1).all(axis=1) if values.size else \
            np.ones(0, dtype=bool)  # (T,)
        off = np.flatnonzero(~finite)
        if off.size:
            raise bad(where, "x", first_row + row_of(offsets, int(off[0])), "non-finite value (NaN or infinity)")


def check_labels(where: str, y: np.ndarray, multilabel: bool, first_row: int = 0) -> None:
    """Class ids >= 0, or multi-label rows of 0/1 only."""
    if multilabel:
        wrong = np.flatnonzero(~np.isin(y, (0, 1)).all(axis=1))
        if wrong.size:
            raise bad(where, "y", first_row + int(wrong[0]), "multi-label values must be 0 or 1")
    else:
        neg = np.flatnonzero(y < 0)
        if neg.size:
            raise bad(where, "y", first_row + int(neg[0]), f"label {int(y[neg[0]])} is negative")


def _consistent(train: RawSplit, other: RawSplit) -> None:
    """`other` has train's input kind, channel count and label layout."""
    if other.kind != train.kind:
        raise bad(other.where, "x", 0, f"{other.kind} input, but {train.where} holds {train.kind} input")
    if other.channels != train.channels:
        raise bad(other.where, "x", 0, f"{other.channels} channel(s), but {train.where} has {train.channels} "
                  "(mixed channel counts)")
    if other.multilabel != train.multilabel:
        layout = lambda s: "a list of 0/1 labels" if s.multilabel else "an int class"  # noqa: E731
        raise bad(other.where, "y", 0, f"y is {layout(other)}, but {train.where} has {layout(train)}")
    if other.multilabel and other.y.shape[1] != train.y.shape[1]:
        raise bad(other.where, "y", 0, f"{other.y.shape[1]} labels per row, but {train.where} has {train.y.shape[1]}")


def task_facts(name: str, train: RawSplit, others: list[RawSplit], metric: str | None) -> TaskInfo:
    """The TaskInfo read from the data: kind, vocabulary or channels, classes, metric, longest length."""
    for split in (train, *others):
        if len(split) == 0:
            raise bad(split.where, "x", 0, "empty split (no rows)")
    for other in others:
        _consistent(train, other)
    if train.multilabel:
        n_classes = int(train.y.shape[1])
    else:
        n_classes = int(train.y.max()) + 1
        for other in others:
            out = np.flatnonzero(other.y >= n_classes)
            if out.size:
                raise bad(other.where, "y", int(out[0]), f"label {int(other.y[out[0]])} out of range 0..{n_classes - 1} "
                          f"(the classes of {train.where})")
        if n_classes < 2:
            raise bad(train.where, "y", 0, "a single class (0) in train; expected at least two classes")
    if train.kind == "tokens":
        d_input = max(int(s.values.max()) for s in (train, *others)) + 1  # vocabulary, 0 included
    else:
        d_input = train.channels
    if metric is None:
        metric = "macro_f1" if train.multilabel else "accuracy"
    if metric not in METRICS:
        raise DataError(f"task.metric={metric!r}; expected one of {', '.join(METRICS)}")
    longest = max(int(np.diff(s.offsets).max()) for s in (train, *others))
    return TaskInfo(name, train.kind, d_input, n_classes, train.multilabel, metric, longest)


def to_array_split(raw: RawSplit, L: int) -> ArraySplit:
    """A ragged `ArraySplit` capped at L steps (no copy of the values)."""
    rows = RaggedRows.from_offsets(raw.values, raw.offsets, L)
    return ArraySplit(rows, rows.lengths, raw.y)


def build_splits(name: str, train: RawSplit, val: RawSplit | None, test: RawSplit, *, max_len: int | None,
                 val_fraction: float, seed: int, metric: str | None = None) -> TaskSplits:
    """Check the raw splits together and return the task's `TaskSplits` (val carved if absent)."""
    info = task_facts(name, train, [s for s in (val, test) if s is not None], metric)
    L = resolve_len(info, max_len)
    tr = to_array_split(train, L)
    if val is None:
        tr, va = split_val(tr, val_fraction, seed)
    else:
        va = to_array_split(val, L)
    return TaskSplits(tr, va, to_array_split(test, L), info)
