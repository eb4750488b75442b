"""The search ledger: `<search>/ledger/trials.parquet` and `stages.parquet`.

The ledger is the source of truth of a search (MLflow is a view of it). It is written by the driver
only, and every write replaces the whole file atomically (write a temp file, fsync, rename), so a
driver killed at any moment leaves either the old or the new ledger, never a torn one.

Columns are the fields of `TrialRow` and `StageRow` (the parquet schemas are derived from them);
`kept` is stored as a JSON string (list of lists of original channel indices). Stage 0 is the dense
baseline (rate 0.0); rate stages are 1..K. Every row is built by the builders at the end of this module
(`candidate_row`, `finished_trial_row`, `best_stage_row`, ...). Every consumer reads rows through `trial_rows` /
`stage_rows` (typed, None for a missing value whatever the pandas version); `read_trials` /
`read_stages` give DataFrames for column arithmetic.

Over 300 lines on purpose: the row types, their parquet schemas, their I/O and their one builder
are one contract (a column added here is added everywhere), kept in one place.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.search import relocate
from search_spaces.errors import SearchStateError

@dataclass(frozen=True)
class TrialRow:
    """One row of `trials.parquet`: one trial of one stage. Optional values are None, never NaN."""

    search: str | None = None
    stage: int | None = None
    rate: float | None = None
    seed: int | None = None
    trial_id: str | None = None
    status: str | None = None  # completed | failed | stopped (early, by the scheduler: last epoch and val metric)
    error: str | None = None
    metric_name: str | None = None
    val_metric: float | None = None
    test_metric: float | None = None
    latency_p50_ms: float | None = None
    latency_p90_ms: float | None = None
    latency_batch: int | None = None
    latency_threads: int | None = None
    latency_length: int | None = None
    latency_device: str | None = None
    params: int | None = None
    kept: str | None = None  # JSON: list per layer of kept original channel indices
    alloc_base: float | None = None
    lr: float | None = None
    epochs_run: int | None = None
    parent_checkpoint: str | None = None
    parent_sha256: str | None = None
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    mlflow_run_id: str | None = None
    started_at: str | None = None  # ISO 8601 UTC
    ended_at: str | None = None
    node: str | None = None
    is_best: bool | None = None
    train_device: str | None = None  # where the trial fine-tuned: "cpu", "cuda:0 (NVIDIA H100)"
    # where and how the latency was measured (latency.runtime, latency.mode, the latency node)
    latency_runtime: str | None = None  # torch | onnxruntime
    latency_runtime_version: str | None = None  # e.g. "onnxruntime 1.32.0"
    latency_mode: str | None = None  # sequence | step
    latency_step_p50_ms: float | None = None  # per streaming step (mode step)
    latency_step_p90_ms: float | None = None
    latency_node_hostname: str | None = None
    latency_node_cpu: str | None = None
    latency_node_arch: str | None = None
    latency_node_id: str | None = None  # the Ray node id
    latency_proxy_ms: float | None = None  # optuna-pareto: the trial's own short timing (its second objective)
    node_id: str | None = None  # the Ray node the trial ran on (`node` is its hostname)
    node_ip: str | None = None
    latency_node_ip: str | None = None
    latency_shared_cores: bool | None = None  # the latency node shares cores with another node (noise)

    @property
    def kept_channels(self) -> list[list[int]] | None:
        return decode_kept(self.kept)


@dataclass(frozen=True)
class StageRow:
    """One row of `stages.parquet`: one stage (stage 0 is the dense baseline). None, never NaN."""

    search: str | None = None
    stage: int | None = None
    rate: float | None = None
    status: str | None = None  # completed | failed
    n_trials: int | None = None
    n_failed: int | None = None
    best_trial_id: str | None = None
    best_seed: int | None = None
    metric_name: str | None = None
    val_metric: float | None = None
    test_metric: float | None = None
    latency_p50_ms: float | None = None
    latency_p90_ms: float | None = None
    params: int | None = None
    speedup_pct: float | None = None  # latency reduction vs the dense stage 0, in %
    param_reduction_pct: float | None = None
    kept: str | None = None
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    mlflow_run_id: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    # where and how the latency was measured (latency.runtime, latency.mode, the latency node)
    latency_runtime: str | None = None  # torch | onnxruntime
    latency_runtime_version: str | None = None  # e.g. "onnxruntime 1.32.0"
    latency_mode: str | None = None  # sequence | step
    latency_step_p50_ms: float | None = None  # per streaming step (mode step)
    latency_step_p90_ms: float | None = None
    latency_node_hostname: str | None = None
    latency_node_cpu: str | None = None
    latency_node_arch: str | None = None
    latency_node_id: str | None = None  # the Ray node id
    latency_node_ip: str | None = None
    latency_shared_cores: bool | None = None  # the latency node shares cores with another node (noise)

    @property
    def kept_channels(self) -> list[list[int]] | None:
        return decode_kept(self.kept)


_ARROW = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}


def _schema_of(row_type: type) -> pa.Schema:
    """The parquet schema of a row dataclass: one column per field, in field order."""
    return pa.schema([(f.name, _ARROW[str(f.type).split(" | ")[0]]) for f in fields(row_type)])


def _typed(value, kind: str):
    """A ledger cell as its Python type; every missing marker (None, NaN, pd.NA, NaT) as None."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return {"str": str, "int": int, "float": float, "bool": bool}[kind](value)


def _row(row_type, record: dict):
    return row_type(**{f.name: _typed(record.get(f.name), str(f.type).split(" | ")[0]) for f in fields(row_type)})


def trial_row(record: dict) -> TrialRow:
    """A typed trial row from a dict or a DataFrame record (missing columns and NaN become None)."""
    return _row(TrialRow, record)


def stage_row(record: dict) -> StageRow:
    """A typed stage row from a dict or a DataFrame record (missing columns and NaN become None)."""
    return _row(StageRow, record)


# ledger column <- key of a latency figure (`workers.runtime_latency.measure_in_runtime`)
LATENCY_COLUMNS = {
    "latency_p50_ms": "p50_ms", "latency_p90_ms": "p90_ms", "latency_batch": "batch", "latency_threads": "threads",
    "latency_length": "length", "latency_device": "device", "latency_runtime": "runtime",
    "latency_runtime_version": "runtime_version", "latency_mode": "mode", "latency_step_p50_ms": "step_p50_ms",
    "latency_step_p90_ms": "step_p90_ms", "latency_node_hostname": "node_hostname", "latency_node_cpu": "node_cpu",
    "latency_node_arch": "node_arch", "latency_node_id": "node_id", "latency_node_ip": "node_ip",
    "latency_shared_cores": "shared_cores",
}


def latency_columns(figure: dict, row_type: type = TrialRow) -> dict:
    """The ledger columns of `row_type` that a latency figure fills (missing keys give None)."""
    names = {f.name for f in fields(row_type)}
    return {column: figure.get(key) for column, key in LATENCY_COLUMNS.items() if column in names}


_STAGE_FIELDS = {f.name for f in fields(StageRow)}
TRIAL_SCHEMA = _schema_of(TrialRow)
STAGE_SCHEMA = _schema_of(StageRow)

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


def _table(path: Path, schema: pa.Schema) -> pa.Table:
    """The parquet file as a table of `schema`; `SearchStateError` naming the file if it is unreadable."""
    try:
        return pq.read_table(path, schema=schema)
    except (pa.ArrowException, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SearchStateError(f"{path}: not a readable ledger file ({reason}); restore it from a copy of the "
                               "search folder or start a new search") from None


PATH_COLUMNS = ("checkpoint", "parent_checkpoint")  # stored relative to the search folder (`relocate.py`)


def _read(path: Path, schema: pa.Schema) -> pd.DataFrame:
    if not path.exists():
        return _empty(schema)
    frame = _table(path, schema).to_pandas()
    for column in schema:  # missing strings as None (pandas 3 reads them as NaN, which is truthy)
        if pa.types.is_string(column.type):
            frame[column.name] = frame[column.name].astype(object).where(frame[column.name].notna(), None)
    root = path.parent.parent
    for name in PATH_COLUMNS:
        if name in frame.columns and len(frame):
            frame[name] = [relocate.from_stored(v, root) for v in frame[name]]
    return frame


def read_trials(search_dir: str | os.PathLike) -> pd.DataFrame:
    """All trial rows (one per stage and trial id), in the ledger's column order."""
    return _read(trials_path(search_dir), TRIAL_SCHEMA)


def read_stages(search_dir: str | os.PathLike) -> pd.DataFrame:
    """All stage rows (one per stage; stage 0 is the dense baseline)."""
    return _read(stages_path(search_dir), STAGE_SCHEMA)


def _rows(path: Path, row_type) -> list:
    if not path.exists():
        return []
    root = path.parent.parent
    return [_row(row_type, {**r, **{k: relocate.from_stored(r[k], root) for k in PATH_COLUMNS if k in r}})
            for r in _table(path, _schema_of(row_type)).to_pylist()]


def trial_rows(search_dir: str | os.PathLike) -> list[TrialRow]:
    """Every trial row, typed, ordered by (stage, trial_id)."""
    return _rows(trials_path(search_dir), TrialRow)


def stage_rows(search_dir: str | os.PathLike) -> list[StageRow]:
    """Every stage row, typed, ordered by stage."""
    return _rows(stages_path(search_dir), StageRow)


def rows_of(frame: pd.DataFrame, row_type) -> list:
    """Typed rows of an already-read ledger DataFrame (`TrialRow` or `StageRow`)."""
    return [_row(row_type, r) for r in frame.to_dict("records")]


def _normalise(rows: Iterable[dict | TrialRow | StageRow], schema: pa.Schema) -> list[dict]:
    names = set(schema.names)
    out = []
    for row in rows:
        row = asdict(row) if isinstance(row, (TrialRow, StageRow)) else row
        unknown = set(row) - names
        if unknown:
            raise ValueError(f"ledger row has unknown columns {sorted(unknown)}")
        out.append({name: row.get(name) for name in schema.names})
    return out


def _write_atomic(frame: pd.DataFrame, path: Path, schema: pa.Schema) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = frame.copy()
    for name in PATH_COLUMNS:
        if name in frame.columns and len(frame):
            frame[name] = [relocate.to_stored(v, path.parent.parent) for v in frame[name]]
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


def write_trials(search_dir: str | os.PathLike, rows: Iterable[dict | TrialRow]) -> pd.DataFrame:
    """Insert or replace trial rows keyed by (stage, trial_id); atomic; returns the new table."""
    rows = _normalise(rows, TRIAL_SCHEMA)
    frame = _upsert(read_trials(search_dir), rows, TRIAL_KEY, TRIAL_SCHEMA)
    _write_atomic(frame, trials_path(search_dir), TRIAL_SCHEMA)
    return frame


def write_stage(search_dir: str | os.PathLike, row: dict | StageRow) -> pd.DataFrame:
    """Insert or replace one stage row keyed by stage; atomic; returns the new table."""
    rows = _normalise([row], STAGE_SCHEMA)
    frame = _upsert(read_stages(search_dir), rows, STAGE_KEY, STAGE_SCHEMA)
    _write_atomic(frame, stages_path(search_dir), STAGE_SCHEMA)
    return frame


def completed_stages(search_dir: str | os.PathLike) -> list[int]:
    """Stage numbers whose stage row says completed, ascending."""
    return sorted(r.stage for r in stage_rows(search_dir) if r.status == "completed")


# ---- the one row builder: every ledger row is made here ---------------------------------------------

_NAMED = ("trial_id", "search", "stage", "rate")  # set from the context (Tune fills its own trial_id in)


def candidate_row(ctx, sample, name: str) -> TrialRow:
    """A trial's row as known when it starts (its candidate): stage, rate, seed, sampled values."""
    return TrialRow(search=ctx.search, stage=ctx.stage, rate=ctx.rate, seed=sample.seed, trial_id=name,
                    alloc_base=sample.alloc_base, lr=sample.lr, parent_checkpoint=ctx.parent_checkpoint,
                    parent_sha256=ctx.parent_sha256)


def finished_trial_row(ctx, sample, name: str, result: dict, error: str | None, metric_name: str,
                       stopped: bool = False, started: dict | None = None) -> TrialRow:
    """A trial's row after Tune: completed when its final result came (`result["final"]`), whose
    keys are TrialRow columns; stopped (by the scheduler) with its last epoch and val metric; else
    failed with `error`. A trial without its final result still names its node: from its last
    start (`started`, its last `starts.log` line: node id, IP, hostname), else from its last epoch
    report (Tune adds `hostname` and `node_ip` to every result)."""
    ok = bool(result.get("final"))
    done = {f.name: result[f.name] for f in fields(TrialRow) if f.name in result and f.name not in _NAMED} if ok else {}
    if not ok:
        on = started or {}
        done = {"epochs_run": result.get("epoch"), "node": on.get("hostname") or result.get("hostname"),
                "node_ip": on.get("node_ip") or result.get("node_ip"), "node_id": on.get("node_id")}
        if stopped:
            done["val_metric"] = result.get("val_metric")
    status = "completed" if ok else ("stopped" if stopped else "failed")
    return replace(candidate_row(ctx, sample, name), **done, status=status,
                   error=None if ok or stopped else error, metric_name=metric_name, is_best=False)


def with_latency(row: TrialRow, latency: dict | None, checkpoint_sha256: str | None) -> TrialRow:
    if latency is None:
        return row
    return replace(row, **latency_columns(latency), checkpoint_sha256=checkpoint_sha256)


def best_stage_row(best: TrialRow, rows: list[TrialRow], dense: StageRow, *, checkpoint: str, sha256: str,
                   run_id: str | None, started_at: str, ended_at: str) -> StageRow:
    """A completed rate stage: its best trial's figures, relative to the dense stage 0."""
    from search_spaces.best_trial import reduction_pct, speedup_pct

    return StageRow(search=best.search, stage=best.stage, rate=best.rate, status="completed", n_trials=len(rows),
                    n_failed=sum(r.status == "failed" for r in rows), best_trial_id=best.trial_id,
                    best_seed=best.seed, metric_name=best.metric_name, val_metric=best.val_metric,
                    test_metric=best.test_metric, params=best.params,
                    **{c: getattr(best, c) for c in LATENCY_COLUMNS if c in _STAGE_FIELDS},
                    speedup_pct=speedup_pct(best.latency_p50_ms, dense.latency_p50_ms),
                    param_reduction_pct=reduction_pct(best.params, dense.params), kept=best.kept,
                    checkpoint=checkpoint, checkpoint_sha256=sha256, mlflow_run_id=run_id or "",
                    started_at=started_at, ended_at=ended_at)


def failed_stage_row(search: str, stage: int, rate: float, rows: list[TrialRow], metric_name: str,
                     run_id: str | None, started_at: str, ended_at: str) -> StageRow:
    return StageRow(search=search, stage=stage, rate=rate, status="failed", n_trials=len(rows), n_failed=len(rows),
                    metric_name=metric_name, mlflow_run_id=run_id, started_at=started_at, ended_at=ended_at)


def baseline_stage_row(search: str, *, metric_name: str, val: float, test: float, latency: dict, params: int,
                       kept, checkpoint: str, sha256: str, run_id: str | None, started_at: str,
                       ended_at: str) -> StageRow:
    """Stage 0: the dense baseline."""
    return StageRow(search=search, stage=0, rate=0.0, status="completed", n_trials=0, n_failed=0,
                    best_trial_id="baseline", metric_name=metric_name, val_metric=val, test_metric=test,
                    params=params, **latency_columns(latency, StageRow), speedup_pct=0.0, param_reduction_pct=0.0, kept=encode_kept(kept), checkpoint=checkpoint,
                    checkpoint_sha256=sha256, mlflow_run_id=run_id or "", started_at=started_at, ended_at=ended_at)
