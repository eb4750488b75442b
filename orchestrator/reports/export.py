"""`s4op export`: one model as safetensors / ONNX / TorchScript at a fixed batch and length (or its S4D
step model with --streaming), checked against eager PyTorch; or as the S4 authors' state-dict layout.

`export_model` is shared by `s4op export SEARCH --rate R` (the selected model of a stage,
`export_search`) and `s4op export --from-checkpoint DIR` (any checkpoint folder, e.g. one written by
`s4op import`, `export_checkpoint`). Format state-spaces: `workers.interop.importer.export_state_spaces`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from orchestrator.reports.ablation import config_near
from orchestrator.reports.pipeline import parse_rate, stage_for_rate, verified_checkpoint
from orchestrator.search import ledger
from search_spaces.errors import ConfigError, S4opError

EXPORT_TOLERANCE = 1e-4
STATE_SPACES = "state-spaces"

def _default_length(search, row: ledger.StageRow) -> int | None:
    trials = search.trials
    if not trials.empty:
        hit = trials[(trials["stage"] == row.stage) & trials["latency_length"].notna()]
        best = hit[hit["trial_id"] == row.best_trial_id]
        for frame in (best, hit, trials[trials["latency_length"].notna()]):
            if not frame.empty:
                return int(frame["latency_length"].iloc[0])
    cfg = config_near(search.folder)
    return int(cfg.task.max_len) if cfg is not None and cfg.task.max_len else None


def export_search(search_dir: str | os.PathLike, rate: float, fmt: str, out: str | os.PathLike, *,
                  batch: int = 1, length: int | None = None, streaming: bool = False, threads: int = 1,
                  repeats: int = 30, warmup: int = 5, form: str = "auto") -> dict:
    """Export the selected model of `rate`; check it against eager PyTorch; time ONNX/TorchScript.

    Writes `out` and `out`.json (the record: source stage, checkpoint hash, shapes, max |diff|,
    latencies). Raises S4opError (nothing left behind) if the check exceeds 1e-4. Format
    state-spaces writes the S4 authors' state-dict layout instead.
    """
    from orchestrator.reports.table import load_search
    from workers.checkpoint import load_checkpoint

    if fmt not in export_formats():
        raise ConfigError(f"--format: got {fmt!r}, expected one of {', '.join(export_formats())}")
    if batch < 1:
        raise ConfigError(f"--batch: got {batch}, expected a positive integer")
    search = load_search(search_dir)
    rate = parse_rate(rate)
    row = stage_for_rate(search, rate)
    folder = verified_checkpoint(search, row)
    if fmt == STATE_SPACES:
        from workers.interop.importer import export_state_spaces

        return {"stage": row.stage, "rate": row.rate, **export_state_spaces(folder, out)}
    model, _ = load_checkpoint(folder)
    if length is None:
        length = _default_length(search, row)
        if length is None:
            raise ConfigError(f"export: no sequence length recorded for stage {row.stage} of {search.folder}; "
                              "expected --length L")
    record = {"search": search.name, "stage": row.stage, "rate": row.rate,
              "checkpoint": str(folder), "checkpoint_sha256": row.checkpoint_sha256}
    return export_model(model, fmt, out, record, batch=batch, length=length, streaming=streaming, threads=threads,
                        repeats=repeats, warmup=warmup, form=form)


def export_formats() -> tuple[str, ...]:
    from workers import export as ex

    return (*ex.FORMATS, STATE_SPACES)


def export_model(model, fmt: str, out, record: dict, *, batch: int = 1, length: int, streaming: bool = False,
                 threads: int = 1, repeats: int = 30, warmup: int = 5, form: str = "auto") -> dict:
    """Write `model` as `fmt` to `out` (+ `out`.json, the record); nothing is left behind if the check
    against PyTorch exceeds EXPORT_TOLERANCE. Returns the record with max_abs_diff and latencies."""
    import torch

    from workers import export as ex
    from workers.latency import measure_latency

    if length < 1:
        raise ConfigError(f"--length: got {length}, expected a positive integer")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        module = ex.streaming(model) if streaming else ex.deployable(model, length, form)
        inputs = ex.module_inputs(module, model, batch, length)
        record = {**record, "format": fmt, "batch": batch, **ex.describe(model, module)}
        out = Path(out)
        path = ex.write_export(module, inputs, fmt, out, record)
        try:
            diff = ex.max_abs_diff(path, fmt, model, module, inputs)
            if not diff <= EXPORT_TOLERANCE:
                raise S4opError(f"export check: {fmt} output differs from PyTorch by {diff:.3g} > "
                                f"{EXPORT_TOLERANCE:g}; nothing written")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        record["max_abs_diff"] = diff
        if fmt in ("onnx", "torchscript"):
            record["latency"] = {fmt: {**ex.time_callable(ex.run_exported(path, fmt, module, inputs, threads),
                                                          repeats=repeats, warmup=warmup), "threads": threads}}
            if not streaming:
                eager = measure_latency(model, (inputs[0],), repeats=repeats, warmup=warmup, threads=threads)
                record["latency"]["pytorch_eager"] = {k: eager[k] for k in ("p50_ms", "p90_ms", "mean_ms", "repeats", "threads")}
    finally:
        torch.set_num_threads(old_threads)
    Path(f"{out}.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record


def export_checkpoint(folder, fmt: str, out, *, batch: int = 1, length: int | None = None, streaming: bool = False,
                      threads: int = 1, repeats: int = 30, warmup: int = 5, form: str = "auto") -> dict:
    """Export the model of checkpoint `folder`; the length defaults to the one recorded at import."""
    from workers.checkpoint import checkpoint_sha256, load_checkpoint

    if fmt not in export_formats():
        raise ConfigError(f"--format: got {fmt!r}, expected one of {', '.join(export_formats())}")
    if fmt == STATE_SPACES:
        from workers.interop.importer import export_state_spaces

        return export_state_spaces(folder, out)
    if batch < 1:
        raise ConfigError(f"--batch: got {batch}, expected a positive integer")
    model, meta = load_checkpoint(folder)
    if length is None:
        length = (meta.get("extra") or {}).get("length")
        if length is None:
            raise ConfigError(f"export: no sequence length recorded in {folder}/model.json; expected --length L")
    record = {"checkpoint": str(folder), "checkpoint_sha256": checkpoint_sha256(folder)}
    return export_model(model, fmt, out, record, batch=batch, length=int(length), streaming=streaming,
                        threads=threads, repeats=repeats, warmup=warmup, form=form)
