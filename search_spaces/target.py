"""A search that answers a question: which stage runs next, and the answer sentence.

Two questions (`search.target`):
- `max_drop`: the highest rate whose best val metric stays within `max_drop` points (metric x 100)
  of the dense baseline's;
- `latency_ms`: the most accurate model whose p50 latency (the search's latency protocol) meets the
  budget.

The configured rates are visited in order as stages 1..K. Once a stage crosses the boundary (its
val metric falls more than `max_drop` below the baseline; its latency meets the budget), the higher
configured rates are skipped and `refine` more stages bisect between the last rate before the
crossing (the baseline's 0 if none) and the first across it; they are numbered K+1, K+2, ... so a
resumed search finds them. Without a target every configured rate runs, in order.

Pure: plain stage results in (from the ledger's stage rows), plain values out; no torch, Ray, MLflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

RATE_DIGITS = 6  # a refined rate is rounded to this many decimals (ledger values stay readable)


@dataclass(frozen=True)
class Target:
    max_drop: float | None = None  # points of the val metric (x 100) below the baseline
    latency_ms: float | None = None  # p50 budget, ms
    refine: int = 2

    @classmethod
    def of(cls, section) -> "Target | None":
        """From the config's `search.target` section (None: no target)."""
        if section is None:
            return None
        return cls(max_drop=section.max_drop, latency_ms=section.latency_ms, refine=int(section.refine))


@dataclass(frozen=True)
class StageResult:
    """A completed stage's best model (stage 0: the dense baseline, rate 0)."""

    stage: int
    rate: float
    val_metric: float | None
    latency_ms: float | None = None
    speedup_pct: float | None = None
    param_reduction_pct: float | None = None


@dataclass(frozen=True)
class NextStage:
    stage: int
    rate: float
    parent: int  # the completed stage whose best model is the parent (incremental mode)
    refined: bool  # a bisection stage (numbered after the configured rates)


@dataclass(frozen=True)
class Answer:
    stage: int | None  # the stage whose model answers the question; None when no stage does
    text: str


def _finite(x) -> bool:
    return x is not None and math.isfinite(float(x))


def drop_points(baseline: StageResult, stage: StageResult) -> float:
    """How far the stage's val metric is below the baseline's, in points (metric x 100)."""
    if not (_finite(stage.val_metric) and _finite(baseline.val_metric)):
        return math.inf
    return 100.0 * (float(baseline.val_metric) - float(stage.val_metric))


def within_tolerance(baseline: StageResult, stage: StageResult, max_drop: float) -> bool:
    return drop_points(baseline, stage) <= max_drop + 1e-9


def meets_budget(stage: StageResult, latency_ms: float) -> bool:
    return _finite(stage.latency_ms) and float(stage.latency_ms) <= latency_ms


def crossed(target: Target, baseline: StageResult, stage: StageResult) -> bool:
    """Whether `stage` lies across the boundary the search looks for."""
    if target.max_drop is not None:
        return not within_tolerance(baseline, stage, target.max_drop)
    return meets_budget(stage, float(target.latency_ms))


def _parent(done: dict[int, StageResult], rate: float) -> int:
    """The completed stage with the highest rate below `rate` (stage 0, the baseline, at least)."""
    below = [s for s in done.values() if s.rate < rate]
    return max(below, key=lambda s: (s.rate, -s.stage)).stage if below else 0


def next_stage(rates: Sequence[float], done: Iterable[StageResult], target: Target | None) -> NextStage | None:
    """The next rate stage to run given the completed ones (stage 0 included), or None: the search is over."""
    done = {s.stage: s for s in done}
    rates = [float(r) for r in rates]
    if target is None:
        for k, rate in enumerate(rates, start=1):
            if k not in done:
                return NextStage(k, rate, _parent(done, rate), False)
        return None
    if 0 not in done:
        raise ValueError("next_stage with a target needs the baseline (stage 0) among the completed stages")
    baseline = done[0]
    if target.latency_ms is not None and meets_budget(baseline, float(target.latency_ms)):
        return None  # the dense model already meets the budget
    lo, hi = 0.0, None
    for k, rate in enumerate(rates, start=1):
        if k not in done:
            return NextStage(k, rate, _parent(done, rate), False)
        if crossed(target, baseline, done[k]):
            hi = done[k].rate
            break
        lo = done[k].rate
    if hi is None:
        return None  # every configured rate stays on this side of the boundary
    for j in range(1, target.refine + 1):
        k = len(rates) + j
        if k not in done:
            rate = round((lo + hi) / 2.0, RATE_DIGITS)
            if not lo < rate < hi:
                return None  # the interval cannot be split further
            return NextStage(k, rate, _parent(done, rate), True)
        if crossed(target, baseline, done[k]):
            hi = done[k].rate
        else:
            lo = done[k].rate
    return None


def pct(rate: float) -> str:
    return f"{100.0 * float(rate):.4g} %"


def _change(value: float | None) -> str:
    """A reduction in % as a signed change ("-38 %")."""
    return "n/a" if not _finite(value) else f"{-float(value):+.0f} %"


def answer(done: Iterable[StageResult], target: Target) -> Answer | None:
    """The sentence that answers the target's question from the completed stages (None before stage 0)."""
    done = {s.stage: s for s in done}
    if 0 not in done:
        return None
    baseline = done[0]
    rated = sorted((s for s in done.values() if s.stage > 0), key=lambda s: (s.rate, s.stage))
    if target.max_drop is not None:
        tol = f"{target.max_drop:g}" if target.max_drop != int(target.max_drop) else f"{target.max_drop:.1f}"
        unit = "point" if target.max_drop == 1 else "points"
        good = [s for s in rated if within_tolerance(baseline, s, target.max_drop)]
        if not good:
            if not rated:
                return Answer(None, f"no rate tried yet within {tol} {unit} of the baseline")
            low = rated[0]
            return Answer(None, f"no rate tried stays within {tol} {unit} of the baseline: the lowest, "
                                f"{pct(low.rate)}, is {drop_points(baseline, low):.2f} points below")
        best = max(good, key=lambda s: (s.rate, -s.stage))
        return Answer(best.stage, f"highest rate within {tol} {unit} of the baseline: {pct(best.rate)} "
                                  f"(latency {_change(best.speedup_pct)}, params {_change(best.param_reduction_pct)})")
    budget = float(target.latency_ms)
    meeting = [s for s in [baseline, *rated] if meets_budget(s, budget)]
    if meeting:
        best = max(meeting, key=lambda s: (float(s.val_metric) if _finite(s.val_metric) else -math.inf,
                                           -float(s.latency_ms), -s.stage))
        if best.stage == 0:
            return Answer(0, f"the dense baseline already meets {budget:g} ms: p50 {baseline.latency_ms:.3g} ms")
        return Answer(best.stage, f"most accurate model within {budget:g} ms: rate {pct(best.rate)} "
                                  f"(val {float(best.val_metric):.4f}, p50 {float(best.latency_ms):.3g} ms, "
                                  f"latency {_change(best.speedup_pct)}, params {_change(best.param_reduction_pct)})")
    timed = [s for s in [baseline, *rated] if _finite(s.latency_ms)]
    if not timed:
        return Answer(None, f"no model tried meets {budget:g} ms (no latency measured yet)")
    fastest = min(timed, key=lambda s: (float(s.latency_ms), s.stage))
    return Answer(None, f"no rate tried meets {budget:g} ms: the fastest, rate {pct(fastest.rate)}, "
                        f"reached {float(fastest.latency_ms):.3g} ms")
