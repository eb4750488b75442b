"""Task `parquet`: one's own sequences in `train.parquet`, `test.parquet` and optionally `val.parquet`.

Columns (any others are ignored):
- `x`: one sequence per row, of any length: `list<int>` (tokens; 0 is also the padding id),
  `list<float>` (one channel) or `list<list<float>>` (L x C, C channels, the same C in every step);
- `y`: `int` (a class id 0..K-1) or `list<int>` of 0/1 (multi-label, the same count in every row).
Without `val.parquet`, `val_fraction` of train is carved out with the loader's seed.

Large files are read one row group at a time (pyarrow) straight into one preallocated numpy array
of values per split (sized from the file's metadata) plus row offsets: never one Python object per
row or per value, and at most one row group of Arrow buffers beside the result.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from search_spaces.errors import DataError
from workers.data.own import RawSplit, bad, build_splits, check_labels, check_values, row_of
from workers.data.tasks import TaskSplits, require_dir

SPLIT_FILES = {"train": "train.parquet", "val": "val.parquet", "test": "test.parquet"}
X_TYPES = "list<int> (tokens), list<float> (one channel) or list<list<float>> (L x C)"
Y_TYPES = "int (a class) or list<int> of 0/1 (multi-label)"


def _is_list(t) -> bool:
    import pyarrow as pa

    return pa.types.is_list(t) or pa.types.is_large_list(t)


def x_layout(t) -> tuple[str, int] | None:
    """(kind, depth) of an Arrow type for column x: tokens/real, 1 = list<...>, 2 = list<list<float>>."""
    import pyarrow as pa

    if not _is_list(t):
        return None
    v = t.value_type
    if pa.types.is_integer(v):
        return "tokens", 1
    if pa.types.is_floating(v):
        return "real", 1
    if _is_list(v) and pa.types.is_floating(v.value_type):
        return "real", 2
    return None


def y_layout(t) -> bool | None:
    """Whether an Arrow type for column y is multi-label (list<int>) or a class (int); None if neither."""
    import pyarrow as pa

    if pa.types.is_integer(t):
        return False
    if _is_list(t) and pa.types.is_integer(t.value_type):
        return True
    return None


def _first_null(arr) -> int:
    return int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])


class _Reader:
    """Fills one split's arrays from the row groups of one file."""

    def __init__(self, path: Path):
        import pyarrow.parquet as pq

        self.where = str(path)
        self.file = self._arrow(lambda: pq.ParquetFile(path))
        schema = self.file.schema_arrow
        for column in ("x", "y"):
            if schema.get_field_index(column) < 0:
                raise bad(self.where, column, 0, f"column missing (the file has {', '.join(schema.names) or 'none'})")
        layout = x_layout(schema.field("x").type)
        if layout is None:
            raise bad(self.where, "x", 0, f"type {schema.field('x').type}; expected {X_TYPES}")
        self.kind, self.depth = layout
        self.multilabel = y_layout(schema.field("y").type)
        if self.multilabel is None:
            raise bad(self.where, "y", 0, f"type {schema.field('y').type}; expected {Y_TYPES}")
        self.n = self.file.metadata.num_rows

    def _arrow(self, fn):
        """Run a pyarrow call; a broken file is a one-line DataError naming it."""
        import pyarrow as pa

        try:
            return fn()
        except (pa.ArrowException, OSError, ValueError, IndexError, KeyError, TypeError, EOFError) as exc:
            raise DataError(f"{self.where}: not a readable parquet file ({type(exc).__name__}: "
                            f"{str(exc)[:160]})") from None

    def _value_bound(self) -> int:
        """At most how many leaf values column x holds (the metadata's value counts of its leaf)."""
        meta = self.file.metadata
        leaf = [j for j in range(meta.num_columns) if meta.schema.column(j).path.split(".")[0] == "x"]
        return sum(meta.row_group(i).column(leaf[0]).num_values for i in range(meta.num_row_groups))

    def read(self) -> RawSplit:
        bound = self._arrow(self._value_bound)
        dtype = np.int64 if self.kind == "tokens" else np.float32
        values = np.empty(bound, dtype=dtype)  # (bound,) filled up to `used`
        offsets = np.zeros(self.n + 1, dtype=np.int64)  # (n+1,)
        y = None
        self.channels = 1 if self.depth == 1 else None
        used = row = 0
        for i in range(self.file.num_row_groups):
            table = self._arrow(lambda: self.file.read_row_group(i, columns=["x", "y"]))
            for xa, ya in zip(table.column("x").chunks, table.column("y").chunks):
                flat, local = self._x_chunk(xa, row)
                labels = self._y_chunk(ya, row)
                m = local.shape[0] - 1
                if used + flat.size > values.size:  # the metadata's count was short: grow
                    values = np.concatenate([values[:used], np.empty(max(flat.size, values.size // 2), dtype)])
                values[used: used + flat.size] = flat
                offsets[row + 1: row + m + 1] = local[1:] // (self.channels or 1) + offsets[row]
                if y is None:
                    y = np.zeros((self.n,) + labels.shape[1:], dtype=labels.dtype)
                if labels.shape[1:] != y.shape[1:]:
                    raise bad(self.where, "y", row, f"{labels.shape[1]} labels, but row 0 has {y.shape[1]}")
                y[row: row + m] = labels
                used += flat.size
                row += m
        values = values[:used]
        if self.kind == "real":
            values = values.reshape(-1, self.channels or 1)  # (T C)
        if y is None:
            y = np.zeros((0, 0) if self.multilabel else (0,), dtype=np.float32 if self.multilabel else np.int64)
        return RawSplit(self.where, self.kind, values, offsets[: row + 1], y, self.multilabel)

    def _x_chunk(self, xa, row: int) -> tuple[np.ndarray, np.ndarray]:
        """(flat values, offsets into them (m+1,)) of one chunk, checked; offsets count leaf values."""
        if xa.null_count:
            raise bad(self.where, "x", row + _first_null(xa), "missing sequence (null)")
        offsets = np.asarray(xa.offsets, dtype=np.int64)  # (m+1,)
        offsets = offsets - offsets[0]
        empty = np.flatnonzero(np.diff(offsets) == 0)
        if empty.size:
            raise bad(self.where, "x", row + int(empty[0]), "empty sequence (expected at least one step)")
        flat = xa.flatten()
        if self.depth == 2:
            if flat.null_count:
                raise bad(self.where, "x", row + row_of(offsets, _first_null(flat)), "missing step (null)")
            inner = np.diff(np.asarray(flat.offsets, dtype=np.int64))  # (steps,) channels per step
            if self.channels is None and inner.size:
                self.channels = int(inner[0])
            wrong = np.flatnonzero(inner != self.channels)
            if wrong.size or self.channels == 0:
                at = int(wrong[0]) if wrong.size else 0
                raise bad(self.where, "x", row + row_of(offsets, at), f"a step of {int(inner[at])} channels, but "
                          f"earlier steps have {self.channels} (mixed channel counts)")
            offsets = offsets * self.channels  # in leaf values
            flat = flat.flatten()
        if flat.null_count:
            raise bad(self.where, "x", row + row_of(offsets, _first_null(flat)), "missing value (null)")
        dtype = np.int64 if self.kind == "tokens" else np.float32
        with np.errstate(over="ignore"):  # a float64 beyond float32 becomes inf, then found non-finite below
            vals = flat.to_numpy(zero_copy_only=False).astype(dtype, copy=False)  # (T_chunk,) leaf values
        c = self.channels or 1
        check_values(self.where, self.kind, vals if self.kind == "tokens" else vals.reshape(-1, c),
                     offsets // c, first_row=row)
        return vals, offsets

    def _y_chunk(self, ya, row: int) -> np.ndarray:
        if ya.null_count:
            raise bad(self.where, "y", row + _first_null(ya), "missing label (null)")
        if not self.multilabel:
            labels = ya.to_numpy(zero_copy_only=False).astype(np.int64)  # (m,)
        else:
            counts = np.diff(np.asarray(ya.offsets, dtype=np.int64))  # (m,)
            wrong = np.flatnonzero(counts != counts[0]) if counts.size else np.zeros(0, int)
            if wrong.size or (counts.size and counts[0] == 0):
                at = int(wrong[0]) if wrong.size else 0
                raise bad(self.where, "y", row + at, f"{int(counts[at])} labels, but row {row} has {int(counts[0])}")
            flat = ya.flatten()
            if flat.null_count:
                raise bad(self.where, "y", row + _first_null(flat) // int(counts[0]), "missing label (null)")
            labels = flat.to_numpy(zero_copy_only=False).reshape(-1, int(counts[0]) if counts.size else 0)  # (m c)
        check_labels(self.where, labels, self.multilabel, first_row=row)
        return labels.astype(np.float32) if self.multilabel else labels


def read_split(path: Path) -> RawSplit:
    """One split file, checked row group by row group."""
    return _Reader(path).read()


def read_raw(data_dir: Path) -> dict[str, RawSplit | None]:
    """{train, val, test} RawSplits of a data folder (val None when val.parquet is absent)."""
    require_dir(data_dir, "train.parquet, test.parquet and optionally val.parquet")
    out: dict[str, RawSplit | None] = {}
    for name, file in SPLIT_FILES.items():
        path = data_dir / file
        if not path.is_file():
            if name == "val":
                out[name] = None
                continue
            raise DataError(f"{path}: missing split file (expected train.parquet, test.parquet and optionally "
                            f"val.parquet in {data_dir})")
        out[name] = read_split(path)
    return out


def load(data_dir: Path, *, max_len: int | None = None, val_fraction: float = 0.2, seed: int = 0,
         metric: str | None = None) -> TaskSplits:
    raw = read_raw(Path(data_dir))
    return build_splits("parquet", raw["train"], raw["val"], raw["test"], max_len=max_len,
                        val_fraction=val_fraction, seed=seed, metric=metric)
