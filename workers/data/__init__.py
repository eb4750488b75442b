"""The four tasks of the paper: loaders for their official on-disk layouts, and generators that
write data of the same kind in the same layout (so one loader reads both).

    load_task(name, data_dir, *, max_len=None, val_fraction=0.2, seed=0) -> TaskSplits
    generate_task(name, out_dir, *, size=None, seed=0, options=None, overwrite=False) -> Path
    fingerprint(data_dir) -> str

Tasks: listops (LRA TSV), pathfinder (LRA pathfinder32 PNG + metadata), imdb (aclImdb byte
level), ecg (CODE-15% hdf5 + exams.csv). Arrays are numpy; see `workers.data.tasks`.
One's own data (`OWN_TASKS`, no generator): parquet (`workers.data.parquet`: train/test/val.parquet
with columns x, y) and python (`workers.data.python_loader`: `loader="package.module:function"`);
their facts (kind, vocabulary or channels, classes, metric) are read from the data.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from search_spaces.errors import DataError
from workers.data.fingerprint import fingerprint
from workers.data.tasks import TASKS, ArraySplit, TaskInfo, TaskSplits, task_info, write_atomically

__all__ = [
    "TaskInfo", "TASKS", "OWN_TASKS", "task_info", "ArraySplit", "TaskSplits",
    "load_task", "generate_task", "fingerprint",
]

OWN_TASKS = ("parquet", "python")  # tasks whose facts are read from one's own data


def _module(name: str):
    if name in OWN_TASKS:
        raise DataError(f"task {name} reads one's own data and has no generator; write its files instead")
    task_info(name)  # unknown task -> DataError
    return importlib.import_module(f"workers.data.{name}")


def load_task(name: str, data_dir, *, max_len: int | None = None, val_fraction: float = 0.2, seed: int = 0,
              loader: str | None = None, metric: str | None = None) -> TaskSplits:
    """Load task `name` from `data_dir` as train/val/test `ArraySplit`s padded/truncated to max_len.

    When the task's files hold no validation split, `val_fraction` of the training set is carved
    out with `seed` (deterministic). Bad or missing files raise `DataError` naming the file.
    `loader` (task python) and `metric` (parquet, python) only apply to one's own data.
    """
    if name == "parquet":
        from workers.data import parquet

        return parquet.load(Path(data_dir), max_len=max_len, val_fraction=val_fraction, seed=seed, metric=metric)
    if name == "python":
        from workers.data import python_loader

        return python_loader.load(Path(data_dir), loader=loader, max_len=max_len, val_fraction=val_fraction,
                                  seed=seed, metric=metric)
    return _module(name).load(Path(data_dir), max_len=max_len, val_fraction=val_fraction, seed=seed)


def generate_task(name: str, out_dir, *, size: dict | None = None, seed: int = 0, options: dict | None = None,
                  overwrite: bool = False) -> Path:
    """Write a synthetic dataset of task `name` in its official layout into `out_dir`; returns it.

    `size` = {train, val, test} counts, `options` = the task's generator options (see
    `workers.data.tasks.OPTIONS`). Written in a temp folder and renamed, so an interrupted run
    leaves nothing half-written; a non-empty `out_dir` is refused unless `overwrite`.
    """
    module = _module(name)
    return write_atomically(out_dir, lambda tmp: module.generate(tmp, size=size, seed=seed, options=options),
                            overwrite=overwrite)
