"""Which trial of a stage wins: the best validation metric, ties to the lower latency.

Pure: trials are plain dicts (ledger rows). Only completed trials with a finite metric can win
(failed ones, and seeds stopped early by the scheduler, never do). Remaining ties (same metric, same latency) go to the lower seed, then the lower trial id, so
the choice never depends on the order trials finished in.
"""

from __future__ import annotations

import math
from typing import Iterable


def _finite(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def eligible(trial: dict, metric: str = "val_metric") -> bool:
    """Whether a trial may be a stage's best: completed (not failed, not stopped early) with a finite metric."""
    return trial.get("status", "completed") == "completed" and _finite(trial.get(metric))


def choose_best(trials: Iterable[dict], *, metric: str = "val_metric", mode: str = "max",
                tie_break: str = "latency", tolerance: float = 0.0) -> dict | None:
    """The winning trial row, or None when no trial completed with a finite metric.

    `metric` is compared in `mode` ("max"|"min"); metrics within `tolerance` of each other tie, and
    ties go to the lower `latency_p50_ms` (tie_break "latency") or the fewer `params` ("params");
    a missing value loses the tie; "none" goes straight to seed order.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode={mode!r}: expected 'max' or 'min'")
    sign = 1.0 if mode == "max" else -1.0
    ok = [t for t in trials if eligible(t, metric)]
    if not ok:
        return None
    best_score = max(sign * float(t[metric]) for t in ok)
    tied = [t for t in ok if sign * float(t[metric]) >= best_score - tolerance]

    def order(t: dict) -> tuple:
        if tie_break in ("latency", "params"):
            column = "latency_p50_ms" if tie_break == "latency" else "params"
            lat_key = float(t[column]) if _finite(t.get(column)) else math.inf
        else:
            lat_key = 0.0
        seed = t.get("seed")
        seed_key = int(seed) if seed is not None and _finite(seed) else math.inf
        return (-sign * float(t[metric]) if tolerance == 0.0 else 0.0, lat_key, seed_key, str(t.get("trial_id", "")))

    return min(tied, key=order)


def speedup_pct(latency_ms: float | None, dense_latency_ms: float | None) -> float | None:
    """Latency reduction vs the dense model, in % (positive = faster)."""
    if not (_finite(latency_ms) and _finite(dense_latency_ms)) or float(dense_latency_ms) <= 0:
        return None
    return 100.0 * (1.0 - float(latency_ms) / float(dense_latency_ms))


def reduction_pct(params: int | None, dense_params: int | None) -> float | None:
    """Parameter reduction vs the dense model, in %."""
    if params is None or not dense_params:
        return None
    return 100.0 * (1.0 - float(params) / float(dense_params))
