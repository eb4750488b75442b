"""Batches of a numpy split as torch tensors, trimmed to the longest sequence in the batch.

A split is any object with `x` ((n L) int64 tokens or (n L C) float32, or `RaggedRows`), `lengths` ((n,) int64) and
`y` ((n,) int64 or (n c) float32), e.g. `workers.data.ArraySplit`. Each batch keeps only the first
max(lengths in batch) steps; padding sits at the end, so a causal model sees the same valid steps.

Training batches are bucketed: the split is shuffled with a seeded `torch.Generator`, cut into
pools of `pool` batches, each pool sorted by length (stable) and cut into batches, and the batch
order is shuffled again. Less padding, and the order is a pure function of the generator's seed.
Evaluation batches go through the split sorted by length (stable), so they are fixed too.

Token batches are checked here, on the host, against the model's vocabulary (`d_input`): the model's
forward only checks shapes and dtypes, so a training step never waits for the device to read a value
back. `Batch.to` moves a batch to a CUDA device from pinned memory without blocking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from search_spaces.errors import DataError
from workers.data.ragged import pad_rows


@dataclass
class Batch:
    """x: (B L') or (B L' C); lengths: (B,); y: (B,) or (B c); index: (B,) rows of the split."""

    x: torch.Tensor
    lengths: torch.Tensor
    y: torch.Tensor
    index: np.ndarray

    def to(self, device: str | torch.device) -> "Batch":
        device = torch.device(device)
        if device.type == "cpu":
            return self
        pin = device.type == "cuda"

        def move(t: torch.Tensor) -> torch.Tensor:
            return (t.pin_memory() if pin else t).to(device, non_blocking=True)

        return Batch(move(self.x), move(self.lengths), move(self.y), self.index)


def n_examples(split) -> int:
    return int(np.asarray(split.lengths).shape[0])


def check_tokens(x: np.ndarray, d_input: int, rows: np.ndarray | None = None) -> None:
    """Refuse a token of x (B L) outside 0..d_input-1: DataError naming the token and its row
    (`rows[i]` for batch row i: the row of the split; default i)."""
    if x.size == 0:
        return
    low, high = int(x.min()), int(x.max())
    if low >= 0 and high < d_input:
        return
    bad = low if low < 0 else high
    row = int(np.argwhere(x == bad)[0][0])
    row = int(rows[row]) if rows is not None else row
    raise DataError(f"data: token {bad} in row {row} out of range, expected 0..{d_input - 1} (model.d_input)")


def make_batch(split, index: np.ndarray, d_input: int | None = None) -> Batch:
    """Gather rows `index` of `split` and trim them to their longest length; with `d_input`, the
    tokens are checked against the vocabulary (`check_tokens`)."""
    lengths = np.asarray(split.lengths)[index]  # (B,)
    width = max(int(lengths.max()), 1) if lengths.size else 1
    x = pad_rows(split.x, index, width)  # (B L') or (B L' C); padded here when the split is ragged
    if d_input is not None:
        check_tokens(x, d_input, np.asarray(index))
    y = np.ascontiguousarray(np.asarray(split.y)[index])  # (B,) or (B c)
    return Batch(torch.from_numpy(x), torch.from_numpy(lengths.astype(np.int64)), torch.from_numpy(y), index)


def train_order(lengths: np.ndarray, batch_size: int, generator: torch.Generator, *, pool: int = 32) -> list[np.ndarray]:
    """Row indices of each training batch, bucketed by length (see module docstring)."""
    n = int(lengths.shape[0])
    if n == 0:
        return []
    perm = torch.randperm(n, generator=generator).numpy()  # (n,)
    span = batch_size * pool
    batches: list[np.ndarray] = []
    for start in range(0, n, span):
        chunk = perm[start : start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, chunk.shape[0], batch_size))
    order = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in order]


def train_batches(split, batch_size: int, generator: torch.Generator, *, pool: int = 32,
                  d_input: int | None = None) -> Iterator[Batch]:
    """Shuffled, length-bucketed batches of `split` (one epoch); tokens checked against `d_input`."""
    lengths = np.asarray(split.lengths)
    for index in train_order(lengths, batch_size, generator, pool=pool):
        yield make_batch(split, index, d_input)


def eval_batches(split, batch_size: int, *, d_input: int | None = None) -> Iterator[Batch]:
    """Batches of `split` in stable length order (one pass, every row once); tokens checked against `d_input`."""
    lengths = np.asarray(split.lengths)
    order = np.argsort(lengths, kind="stable")  # (n,)
    for start in range(0, order.shape[0], batch_size):
        yield make_batch(split, order[start : start + batch_size], d_input)


def n_train_batches(split, batch_size: int, *, pool: int = 32) -> int:
    """How many batches `train_batches` yields per epoch (for the lr schedule)."""
    n = n_examples(split)
    span = batch_size * pool
    full, rest = divmod(n, span)
    return full * pool + -(-rest // batch_size)
