"""Variable-length sequences stored flat: one values array and row offsets, padded only per batch.

`RaggedRows` holds n sequences as `values` (T,) int64 tokens or (T C) float32 with `starts` (n,) and
`lengths` (n,): row i is values[starts[i]:starts[i] + lengths[i]] (a `max_len` cap shortens
lengths without copying; subsets share `values`). It stands in for the padded x of an `ArraySplit`:

- `shape` is (n, L_max) or (n, L_max, C) and `len()` is n, like the padded array would be;
- `rows[index]` is a `RaggedRows` of those rows sharing the same values (so `ArraySplit.take` and
  the validation carve-out work unchanged and copy no sequence);
- `padded(index, width)` is the padded numpy batch `(B width)` or `(B width C)` that
  `workers.batches.make_batch` asks for; nothing is ever padded to L_max for the whole split.
"""

from __future__ import annotations

import numpy as np


class RaggedRows:
    def __init__(self, values: np.ndarray, starts: np.ndarray, lengths: np.ndarray):
        self.values = values  # (T,) or (T C), shared by every subset
        self.starts = np.asarray(starts, dtype=np.int64)  # (n,) row i is values[starts[i]:starts[i] + lengths[i]]
        self.lengths = np.asarray(lengths, dtype=np.int64)  # (n,)

    @classmethod
    def from_offsets(cls, values: np.ndarray, offsets: np.ndarray, max_len: int | None = None) -> "RaggedRows":
        """Rows values[offsets[i]:offsets[i+1]], each cut to `max_len` steps if given."""
        offsets = np.asarray(offsets, dtype=np.int64)  # (n+1,)
        lengths = np.diff(offsets)  # (n,)
        return cls(values, offsets[:-1], lengths if max_len is None else np.minimum(lengths, max_len))

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        L = int(self.lengths.max()) if len(self) else 0
        return (len(self), L) + tuple(self.values.shape[1:])

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes + self.starts.nbytes + self.lengths.nbytes)

    def _positions(self, index: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row in batch, step, position in values) of every kept step of rows `index`."""
        n = np.minimum(self.lengths[index], width)  # (B,)
        total = int(n.sum())
        rows = np.repeat(np.arange(index.shape[0]), n)  # (S,)
        starts = np.cumsum(n) - n  # (B,)
        steps = np.arange(total) - np.repeat(starts, n)  # (S,)
        src = np.repeat(self.starts[index], n) + steps  # (S,)
        return rows, steps, src

    def padded(self, index, width: int | None = None) -> np.ndarray:
        """Rows `index` right-padded with zeros to `width` (default: their longest length)."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)  # (B,)
        if width is None:
            width = int(self.lengths[index].max()) if index.size else 1
        out = np.zeros((index.shape[0], width) + self.values.shape[1:], dtype=self.values.dtype)  # (B W [C])
        rows, steps, src = self._positions(index, width)
        out[rows, steps] = self.values[src]
        return out

    def __getitem__(self, index) -> "RaggedRows":
        """Rows `index` (an int array, a bool mask or a slice); shares `values`, copies nothing big."""
        index = np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        index = index.astype(np.int64).reshape(-1)  # (B,)
        return RaggedRows(self.values, self.starts[index], self.lengths[index])


def pad_rows(x, index: np.ndarray, width: int) -> np.ndarray:
    """Rows `index` of a padded array or of `RaggedRows`, cut or padded to `width` steps."""
    if isinstance(x, RaggedRows):
        return x.padded(index, width)
    return np.ascontiguousarray(np.asarray(x)[index][:, :width])  # (B width ...)
