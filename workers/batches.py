"""Batches of a numpy split as torch tensors, trimmed to the longest sequence in the batch.

A split is any object with `x` ((n L) int64 tokens or (n L C) float32, or `RaggedRows`), `lengths` ((n,) int64) and
`y` ((n,) int64 or (n c) float32), e.g. `workers.data.ArraySplit`. Each batch keeps only the first
max(lengths in batch) steps; padding sits at the end, so a causal model sees the same valid steps.

Training batches are bucketed: the split is shuffled with a seeded `torch.Generator`, cut into
pools of `pool` batches, each pool sorted by length (stable) and cut into batches, and the batch
order is shuffled again. Less padding, and the order is a pure function of the generator's seed.
Evaluation batches go through the split sorted by length (stable), so they are fixed too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from workers.data.ragged import pad_rows


@dataclass
class Batch:
    """x: (B L') or (B L' C); lengths: (B,); y: (B,) or (B c); index: (B,) rows of the split."""

    x: torch.Tensor
    lengths: torch.Tensor
    y: torch.Tensor
    index: np.ndarray

    def to(self, device: str | torch.device) -> "Batch":
        if str(device) == "cpu":
            return self
        return Batch(
            self.x.to(device, non_blocking=True),
            self.lengths.to(device, non_blocking=True),
            self.y.to(device, non_blocking=True),
            self.index,
        )


def n_examples(split) -> int:
    return int(np.asarray(split.lengths).shape[0])


def make_batch(split, index: np.ndarray) -> Batch:
    """Gather rows `index` of `split` and trim them to their longest length."""
    lengths = np.asarray(split.lengths)[index]  # (B,)
    width = max(int(lengths.max()), 1) if lengths.size else 1
    x = pad_rows(split.x, index, width)  # (B L') or (B L' C); padded here when the split is ragged
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


def train_batches(split, batch_size: int, generator: torch.Generator, *, pool: int = 32) -> Iterator[Batch]:
    """Shuffled, length-bucketed batches of `split` (one epoch)."""
    lengths = np.asarray(split.lengths)
    for index in train_order(lengths, batch_size, generator, pool=pool):
        yield make_batch(split, index)


def eval_batches(split, batch_size: int) -> Iterator[Batch]:
    """Batches of `split` in stable length order (one pass, every row once)."""
    lengths = np.asarray(split.lengths)
    order = np.argsort(lengths, kind="stable")  # (n,)
    for start in range(0, order.shape[0], batch_size):
        yield make_batch(split, order[start : start + batch_size])


def n_train_batches(split, batch_size: int, *, pool: int = 32) -> int:
    """How many batches `train_batches` yields per epoch (for the lr schedule)."""
    n = n_examples(split)
    span = batch_size * pool
    full, rest = divmod(n, span)
    return full * pool + -(-rest // batch_size)
