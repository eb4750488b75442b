"""Task `python`: one's own data from a function, `task.loader: "package.module:function"`.

The function is called as `function(data_dir: pathlib.Path, seed: int)` and returns the tuple
`(train, val, test)`; `val` may be None (then `task.val_fraction` of train is carved out with the
seed). Each split is `(x, y)` or `(x, y, lengths)`:

- x: a numpy array `(n L)` of ints (tokens, 0 is also the padding id), `(n L)` of floats (one
  channel) or `(n L C)` of floats; or a sequence of n arrays, each `(L_i,)` ints or floats or
  `(L_i C)` floats (sequences of different lengths);
- y: `(n,)` int class ids, or `(n c)` 0/1 labels (multi-label);
- lengths (optional, array x only): `(n,)` ints in 1..L, the real length of each row of x.

The module must be importable where trials run (installed, or on PYTHONPATH). Everything returned
goes through the same checks as the parquet files (`workers.data.own`).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from search_spaces.errors import DataError
from workers.data.own import RawSplit, bad, build_splits, check_labels, check_values
from workers.data.tasks import TaskSplits

SIGNATURE = "function(data_dir: Path, seed: int) -> (train, val | None, test), each (x, y) or (x, y, lengths)"


def resolve_loader(spec: str | None):
    """The function named `package.module:function`; a bad name is a one-line DataError."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise DataError(f"task.loader={spec!r}; expected \"package.module:function\" ({SIGNATURE})")
    module_name, fn_name = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DataError(f"task.loader={spec!r}: cannot import {module_name} ({exc})") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise DataError(f"task.loader={spec!r}: {module_name} has no function {fn_name}")
    return fn


def _x_flat(where: str, x) -> tuple[str, np.ndarray, np.ndarray]:
    """(kind, flat values, offsets) of x given as one array or as a sequence of arrays."""
    if isinstance(x, np.ndarray) and x.dtype != object:
        if x.ndim not in (2, 3) or x.shape[0] == 0:
            raise bad(where, "x", 0, f"array of shape {x.shape}; expected (n L) or (n L C) with n >= 1")
        rows = list(x)
    else:
        try:
            rows = [np.asarray(r) for r in x]
        except (TypeError, ValueError) as exc:
            raise bad(where, "x", 0, f"not a sequence of arrays ({exc})") from None
    if not rows:
        raise bad(where, "x", 0, "empty split (no rows)")
    first = rows[0]
    kind = "tokens" if np.issubdtype(first.dtype, np.integer) else "real"
    for i, r in enumerate(rows):
        ok = (np.issubdtype(r.dtype, np.integer) and r.ndim == 1) if kind == "tokens" else \
            (np.issubdtype(r.dtype, np.floating) or np.issubdtype(r.dtype, np.integer)) and r.ndim in (1, 2)
        if not ok:
            raise bad(where, "x", i, f"{r.dtype} array of shape {r.shape}; expected {kind} like row 0")
        if kind == "real" and (r.ndim == 2) != (first.ndim == 2) or r.ndim == 2 and r.shape[1] != first.shape[1]:
            raise bad(where, "x", i, f"shape {r.shape}, but row 0 has shape {first.shape} (mixed channel counts)")
    lengths = np.array([r.shape[0] for r in rows], dtype=np.int64)  # (n,)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)  # (n+1,)
    if kind == "tokens":
        values = np.concatenate(rows).astype(np.int64)  # (T,)
    else:
        values = np.concatenate([r.reshape(r.shape[0], -1) for r in rows]).astype(np.float32)  # (T C)
    return kind, values, offsets


def raw_split(where: str, split) -> RawSplit:
    """A loader's `(x, y[, lengths])` as a checked RawSplit."""
    if not isinstance(split, (tuple, list)) or len(split) not in (2, 3):
        raise bad(where, "x", 0, f"got {type(split).__name__}; expected (x, y) or (x, y, lengths)")
    x, y = split[0], split[1]
    if len(split) == 3:
        if not isinstance(x, np.ndarray) or x.ndim not in (2, 3):
            raise bad(where, "lengths", 0, "lengths are only for an array x of shape (n L) or (n L C)")
        lengths = np.asarray(split[2])
        if lengths.shape != (x.shape[0],) or not np.issubdtype(lengths.dtype, np.integer):
            raise bad(where, "lengths", 0, f"shape {lengths.shape} {lengths.dtype}; expected ({x.shape[0]},) ints")
        wrong = np.flatnonzero((lengths < 1) | (lengths > x.shape[1]))
        if wrong.size:
            raise bad(where, "lengths", int(wrong[0]), f"length {int(lengths[wrong[0]])} outside 1..{x.shape[1]}")
        x = [row[:k] for row, k in zip(x, lengths)]
    kind, values, offsets = _x_flat(where, x)
    check_values(where, kind, values, offsets)
    y = np.asarray(y)
    n = offsets.shape[0] - 1
    if y.ndim not in (1, 2) or y.shape[0] != n or not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool):
        raise bad(where, "y", 0, f"{y.dtype} array of shape {y.shape}; expected ({n},) class ids or ({n} c) 0/1 labels")
    multilabel = y.ndim == 2
    check_labels(where, y, multilabel)
    return RawSplit(where, kind, values, offsets, y.astype(np.float32) if multilabel else y.astype(np.int64), multilabel)


def load(data_dir, *, loader: str | None, max_len: int | None = None, val_fraction: float = 0.2, seed: int = 0,
         metric: str | None = None) -> TaskSplits:
    fn = resolve_loader(loader)
    result = fn(Path(data_dir), seed)
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        raise DataError(f"task.loader={loader!r} returned {type(result).__name__}; expected {SIGNATURE}")
    splits = [None if s is None and name == "val" else raw_split(f"loader {loader} split {name}", s)
              for name, s in zip(("train", "val", "test"), result)]
    return build_splits("python", splits[0], splits[1], splits[2], max_len=max_len,
                        val_fraction=val_fraction, seed=seed, metric=metric)
