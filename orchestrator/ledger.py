"""The search ledger: `<search>/ledger/trials.parquet` and `stages.parquet`.

The ledger is the source of truth of a search (MLflow is a view of it). It is written by the driver
only, and every write replaces the whole file atomically (write a temp file, fsync, rename), so a
driver killed at any moment leaves either the old or the new ledger, never a torn one.

Rows are plain dicts keyed by the column names below; `kept` is stored as a JSON string (list of
lists of original channel indices). Stage 0 is the dense baseline (rate 0.0); rate stages are 1..K.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

TRIAL_SCHEMA = pa.schema(
    [
        ("search", pa.string()),
        ("stage", pa.int64()),
        ("rate", pa.float64()),
        ("seed", pa.int64()),
        ("trial_id", pa.string()),
        ("status", pa.string()),  # completed | failed
        ("error", pa.string()),
        ("metric_name", pa.string()),
        ("val_metric", pa.float64()),
        ("test_metric", pa.float64()),
        ("latency_p50_ms", pa.float64()),
        ("latency_p90_ms", pa.float64()),
        ("latency_batch", pa.int64()),
        ("latency_threads", pa.int64()),
        ("latency_length", pa.int64()),
        ("latency_device", pa.string()),
        ("params", pa.int64()),
        ("kept", pa.string()),  # JSON: list per layer of kept original channel indices
        ("alloc_base", pa.float64()),
        ("lr", pa.float64()),
        ("epochs_run", pa.int64()),
        ("parent_checkpoint", pa.string()),
        ("parent_sha256", pa.string()),
        ("checkpoint", pa.string()),
        ("checkpoint_sha256", pa.string()),
        ("mlflow_run_id", pa.string()),
        ("started_at", pa.string()),  # ISO 8601 UTC
        ("ended_at", pa.string()),
        ("node", pa.string()),
        ("is_best", pa.bool_()),
        ("train_device", pa.string()),  # where the trial fine-tuned: "cpu", "cuda:0 (NVIDIA H100)"
    ]
)

STAGE_SCHEMA = pa.schema(
    [
        ("search", pa.string()),
        ("stage", pa.int64()),
        ("rate", pa.float64()),
        ("status", pa.string()),  # completed | failed
        ("n_trials", pa.int64()),
        ("n_failed", pa.int64()),
        ("best_trial_id", pa.string()),
        ("best_seed", pa.int64()),
        ("metric_name", pa.string()),
        ("val_metric", pa.float64()),
        ("test_metric", pa.float64()),
        ("latency_p50_ms", pa.float64()),
        ("latency_p90_ms", pa.float64()),
        ("params", pa.int64()),
        ("speedup_pct", pa.float64()),  # latency reduction vs the dense stage 0, in %
        ("param_reduction_pct", pa.float64()),
        ("kept", pa.string()),
        ("checkpoint", pa.string()),
        ("checkpoint_sha256", pa.string()),
        ("mlflow_run_id", pa.string()),
        ("started_at", pa.string()),
        ("ended_at", pa.string()),
    ]
)

TRIAL_KEY = ("stage", "trial_id")
STAGE_KEY = ("stage",)


def ledger_dir(search_dir: str | os.PathLike) -> Path:
    return Path(search_dir) / "ledger"


def trials_path(search_dir: str | os.PathLike) -> Path:
    return ledger_dir(search_dir) / "trials.parquet"


def stages_path(search_dir: str | os.PathLike) -> Path:
    return ledger_dir(search_dir) / "stages.parquet"


def encode_kept(kept: Iterable[Iterable[int]]) -> str:
    """Kept channels per layer as the ledger's JSON string."""
    return json.dumps([sorted(int(c) for c in layer) for layer in kept])


def decode_kept(text: str | None) -> list[list[int]] | None:
    return None if text is None or text == "" else [list(map(int, layer)) for layer in json.loads(text)]


def _empty(schema: pa.Schema) -> pd.DataFrame:
    return schema.empty_table().to_pandas()


def _read(path: Path, schema: pa.Schema) -> pd.DataFrame:
    if not path.exists():
        return _empty(schema)
    return pq.read_table(path, schema=schema).to_pandas()


def read_trials(search_dir: str | os.PathLike) -> pd.DataFrame:
    """All trial rows (one per stage and trial id), in the ledger's column order."""
    return _read(trials_path(search_dir), TRIAL_SCHEMA)


def read_stages(search_dir: str | os.PathLike) -> pd.DataFrame:
    """All stage rows (one per stage; stage 0 is the dense baseline)."""
    return _read(stages_path(search_dir), STAGE_SCHEMA)


def _normalise(rows: Iterable[dict], schema: pa.Schema) -> list[dict]:
    names = set(schema.names)
    out = []
    for row in rows:
        unknown = set(row) - names
        if unknown:
            raise ValueError(f"ledger row has unknown columns {sorted(unknown)}")
        out.append({name: row.get(name) for name in schema.names})
    return out


def _write_atomic(frame: pd.DataFrame, path: Path, schema: pa.Schema) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            pq.write_table(table, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _upsert(existing: pd.DataFrame, rows: list[dict], key: tuple[str, ...], schema: pa.Schema) -> pd.DataFrame:
    new = pd.DataFrame(rows, columns=schema.names)
    if not existing.empty:
        new_keys = set(map(tuple, new[list(key)].itertuples(index=False, name=None)))
        keep = [tuple(k) not in new_keys for k in existing[list(key)].itertuples(index=False, name=None)]
        existing = existing[keep]
        frame = pd.concat([existing, new], ignore_index=True) if not existing.empty else new
    else:
        frame = new
    return frame.sort_values(list(key), kind="stable").reset_index(drop=True)


def write_trials(search_dir: str | os.PathLike, rows: Iterable[dict]) -> pd.DataFrame:
    """Insert or replace trial rows keyed by (stage, trial_id); atomic; returns the new table."""
    rows = _normalise(rows, TRIAL_SCHEMA)
    frame = _upsert(read_trials(search_dir), rows, TRIAL_KEY, TRIAL_SCHEMA)
    _write_atomic(frame, trials_path(search_dir), TRIAL_SCHEMA)
    return frame


def write_stage(search_dir: str | os.PathLike, row: dict) -> pd.DataFrame:
    """Insert or replace one stage row keyed by stage; atomic; returns the new table."""
    rows = _normalise([row], STAGE_SCHEMA)
    frame = _upsert(read_stages(search_dir), rows, STAGE_KEY, STAGE_SCHEMA)
    _write_atomic(frame, stages_path(search_dir), STAGE_SCHEMA)
    return frame


def completed_stages(search_dir: str | os.PathLike) -> list[int]:
    """Stage numbers whose stage row says completed, ascending."""
    stages = read_stages(search_dir)
    return sorted(int(s) for s in stages.loc[stages["status"] == "completed", "stage"])
