"""`s4op export`: the selected model of one rate as safetensors / ONNX / TorchScript at a fixed batch
and length (or its S4D step model with --streaming), checked against eager PyTorch."""

from __future__ import annotations

import json
import os
from pathlib import Path

from orchestrator.reports.ablation import config_near
from orchestrator.reports.pipeline import parse_rate, stage_for_rate, verified_checkpoint
from orchestrator.search import ledger
from search_spaces.errors import ConfigError, S4opError

EXPORT_TOLERANCE = 1e-4


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
    latencies). Raises S4opError (nothing left behind) if the check exceeds 1e-4.
    """
    import torch

    from orchestrator.reports.table import load_search
    from workers import export as ex
    from workers.checkpoint import load_checkpoint
    from workers.latency import measure_latency

    if fmt not in ex.FORMATS:
        raise ConfigError(f"--format: got {fmt!r}, expected one of {', '.join(ex.FORMATS)}")
    if batch < 1:
        raise ConfigError(f"--batch: got {batch}, expected a positive integer")
    search = load_search(search_dir)
    rate = parse_rate(rate)
    row = stage_for_rate(search, rate)
    folder = verified_checkpoint(search, row)
    model, _ = load_checkpoint(folder)
    if length is None:
        length = _default_length(search, row)
        if length is None:
            raise ConfigError(f"export: no sequence length recorded for stage {row.stage} of {search.folder}; "
                              "expected --length L")
    if length < 1:
        raise ConfigError(f"--length: got {length}, expected a positive integer")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        module = ex.streaming(model) if streaming else ex.deployable(model, length, form)
        inputs = ex.module_inputs(module, model, batch, length)
        record = {"search": search.name, "stage": row.stage, "rate": row.rate, "format": fmt,
                  "batch": batch, "checkpoint": str(folder), "checkpoint_sha256": row.checkpoint_sha256,
                  **ex.describe(model, module)}
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


