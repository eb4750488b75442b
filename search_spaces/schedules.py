"""Rate schedules: the increasing pruning rates a search visits, stage by stage.

Stage k (k = 1..K) prunes to rate r_k; stage 0 is the dense baseline (rate 0).
"""

from __future__ import annotations

from search_spaces.errors import ConfigError

SCHEDULES: dict[str, tuple[float, ...]] = {
    "paper": (0.1, 0.3, 0.5, 0.7, 0.9),  # the S4oP paper's rates
    "coarse": (0.3, 0.6, 0.9),
    "fine": (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
}


def schedule(name: str) -> list[float]:
    """The named schedule's rates (paper: 0.1, 0.3, 0.5, 0.7, 0.9)."""
    if name not in SCHEDULES:
        raise ConfigError(f"schedule {name!r} must be one of {', '.join(SCHEDULES)}")
    return list(SCHEDULES[name])


def linspace_rates(start: float, stop: float, n: int) -> list[float]:
    """n evenly spaced rates from start to stop inclusive, rounded to 6 decimals; 0 < start < stop < 1."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"linspace_rates n={n!r} must be a positive integer")
    if not 0.0 < start < 1.0 or not 0.0 < stop < 1.0 or (n > 1 and not start < stop):
        raise ConfigError(f"linspace_rates start={start!r}, stop={stop!r} must satisfy 0 < start < stop < 1")
    if n == 1:
        return [round(float(start), 6)]
    rates = [round(start + (stop - start) * k / (n - 1), 6) for k in range(n)]
    if len(set(rates)) != n:
        raise ConfigError(f"linspace_rates n={n} is too many distinct rates between {start} and {stop}")
    return rates


def stage_rates(rates: list[float]) -> list[tuple[int, float]]:
    """(stage, rate) pairs: stage 0 is the dense baseline at rate 0.0, then 1..K."""
    return [(0, 0.0)] + [(k + 1, float(r)) for k, r in enumerate(rates)]
