"""What a stage's trials vary: the seed (grid), or seed, allocation base and fine-tune lr (Optuna).

`trial_space(cfg)` returns the space as plain data, one `Dimension` per trial parameter, so the
driver's Tune module translates it (`Grid` -> `tune.grid_search`, `Choice` -> `tune.choice`,
`Uniform` -> `tune.uniform`, `LogUniform` -> `tune.loguniform`) and nothing here imports Ray.

- grid (`search.algorithm.kind: grid`): every seed of `search.seeds`, one trial each;
- optuna: TPE samples the seed among `search.seeds`, the depth-aware allocation base in
  [ALLOC_BASE_LOW, ALLOC_BASE_HIGH] and the fine-tune lr log-uniformly within a factor
  LR_SPREAD of `search.finetune.lr`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from search_spaces.config import SearchConfig

ALLOC_BASE_LOW, ALLOC_BASE_HIGH = 1.25, 3.0
LR_SPREAD = 3.0


@dataclass(frozen=True)
class Grid:
    """Every value, one trial each."""

    values: tuple


@dataclass(frozen=True)
class Choice:
    """One value, sampled."""

    values: tuple


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float


@dataclass(frozen=True)
class LogUniform:
    low: float
    high: float


Dimension = Union[Grid, Choice, Uniform, LogUniform]


def trial_space(cfg: SearchConfig) -> dict[str, Dimension]:
    """The trial parameters a stage varies, by name (`seed`; with Optuna also `alloc_base`, `lr`)."""
    seeds = tuple(cfg.seed_list)
    if cfg.search.algorithm.kind == "grid":
        return {"seed": Grid(seeds)}
    lr = float(cfg.search.finetune.lr)
    return {"seed": Choice(seeds), "alloc_base": Uniform(ALLOC_BASE_LOW, ALLOC_BASE_HIGH),
            "lr": LogUniform(lr / LR_SPREAD, lr * LR_SPREAD)}
