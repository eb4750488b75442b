"""The `search` section: rates, seeds, allocation, selection, bypass, fine-tune budget, selection
metric and the trial algorithm (grid or Optuna). The policy choices are the names registered in
`search_spaces.policies`."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from search_spaces.config.fields import MAX_SEED, MAX_SEED_COUNT, PAPER_SEEDS, Float, Int, Precision, Seed, _Section
from search_spaces.config.messages import short
from search_spaces.policies import ALLOCATION, IMPORTANCE, SELECTION

AllocationPolicy = ALLOCATION.literal()  # depth-aware, uniform, random, layer-wise
SelectionPolicy = SELECTION.literal()  # random, importance, mixed
ImportanceScore = IMPORTANCE.literal()  # hinf, energy


class AllocationSection(_Section):
    """How many channels each layer loses at a rate (see `search_spaces.allocation`)."""

    policy: AllocationPolicy = "depth-aware"
    base: Float = Field(2.0, gt=1.0)
    layer: Optional[Int] = Field(None, ge=0)


class SelectionSection(_Section):
    """Which kept channels go (see `search_spaces.selection`)."""

    policy: SelectionPolicy = "random"
    score: ImportanceScore = "hinf"
    candidates: Float = Field(2.0, ge=1.0)


class FinetuneSection(_Section):
    epochs: Int = Field(5, ge=1)
    lr: Float = Field(1.0e-4, gt=0.0)
    weight_decay: Float = Field(1.0e-5, ge=0.0)
    patience: Int = Field(2, ge=1)
    batch_size: Int = Field(50, ge=1)
    precision: Precision = "fp32"


class AlgorithmSection(_Section):
    """`grid`: every seed at every rate; `optuna`: TPE over seed, allocation base and lr;
    `optuna-pareto`: Optuna's multi-objective TPE over the same space, val metric and an in-trial
    latency proxy together (the stage's best: the most accurate point on the front)."""

    kind: Literal["grid", "optuna", "optuna-pareto"] = "grid"
    samples: Int = Field(4, ge=1)
    seed: Int = Field(0, ge=0, le=MAX_SEED)


class SchedulerSection(_Section):
    """Seed early stopping: `asha` stops the seeds of a stage falling behind after `grace_epochs`
    fine-tune epochs (Tune's ASHA, `reduction` = its reduction factor); `halving` waits at each rung
    (grace_epochs x reduction^i) until every seed has reported and keeps the best 1/reduction of them
    (synchronous successive halving, `search_spaces.halving`); `none` runs every seed to the end."""

    kind: Literal["none", "asha", "halving"] = "none"
    grace_epochs: Int = Field(1, ge=1)
    reduction: Float = Field(2.0, gt=1.0)


class TargetSection(_Section):
    """What the search answers (see `search_spaces.target`): the highest rate whose val metric stays
    within `max_drop` points of the baseline, or the most accurate model whose p50 latency meets
    `latency_ms`; `refine` bisection stages narrow the boundary once the rates in order cross it."""

    max_drop: Optional[Float] = Field(None, ge=0.0)
    latency_ms: Optional[Float] = Field(None, gt=0.0)
    refine: Int = Field(2, ge=0, le=10)

    @model_validator(mode="after")
    def _one_target(self) -> "TargetSection":
        if self.max_drop is not None and self.latency_ms is not None:
            raise ValueError(f"search.target sets both max_drop={self.max_drop:g} and latency_ms={self.latency_ms:g}; "
                             "expected one of them")
        if self.max_drop is None and self.latency_ms is None:
            raise ValueError("search.target must set max_drop (points below the baseline) or latency_ms (p50 budget)")
        return self


class SearchSection(_Section):
    rates: list[Float] = Field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])
    seeds: Union[list[Seed], Int] = Field(default_factory=lambda: list(PAPER_SEEDS))
    mode: Literal["incremental", "one-shot"] = "incremental"
    allocation: AllocationSection = Field(default_factory=AllocationSection)
    selection: SelectionSection = Field(default_factory=SelectionSection)
    bypass: Literal["identity", "zero"] = "identity"
    finetune: FinetuneSection = Field(default_factory=FinetuneSection)
    metric: Literal["val_metric"] = "val_metric"
    tie_break: Literal["latency", "params", "none"] = "latency"
    algorithm: AlgorithmSection = Field(default_factory=AlgorithmSection)
    scheduler: SchedulerSection = Field(default_factory=SchedulerSection)
    target: Optional[TargetSection] = None

    @field_validator("rates", mode="after")
    @classmethod
    def _rates(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("{key}=[] must list at least one rate in (0, 1)")
        for i, r in enumerate(v):
            if not 0.0 < r < 1.0:
                raise ValueError("{key}[%d]=%r must be in (0, 1)" % (i, r))
            if i and r <= v[i - 1]:
                raise ValueError("{key}[%d]=%r must be greater than {key}[%d]=%r" % (i, r, i - 1, v[i - 1]))
        return v

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds_shape(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, (int, list)):
            raise ValueError("{key}=%s must be a list of seeds or a seed count" % short(repr(v)))
        return v

    @field_validator("seeds", mode="after")
    @classmethod
    def _seeds(cls, v: Union[list[int], int]) -> Union[list[int], int]:
        if isinstance(v, int):
            if not 1 <= v <= MAX_SEED_COUNT:
                raise ValueError("{key}=%d must be a seed count in 1..%d or a list of seeds" % (v, MAX_SEED_COUNT))
            return v
        if not v:
            raise ValueError("{key}=[] must list at least one seed")
        for i, s in enumerate(v):
            if s in v[:i]:
                raise ValueError("{key}[%d]=%d repeats {key}[%d]; seeds must be distinct" % (i, s, v.index(s)))
        return v

    @property
    def seed_list(self) -> list[int]:
        return seed_list(self.seeds)


def seed_list(seeds: Union[list[int], int]) -> list[int]:
    """The seeds as a list: an int n means the paper's 7, 42, 123, 2024, 31650 first, then extras."""
    if not isinstance(seeds, int):
        return list(seeds)
    extras = [100_003 + 7_919 * k for k in range(max(0, seeds - len(PAPER_SEEDS)))]
    return (list(PAPER_SEEDS) + extras)[:seeds]
