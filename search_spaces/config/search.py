"""The `search` section: rates, seeds, allocation, selection, bypass, fine-tune budget, selection
metric and the trial algorithm (grid or Optuna). The policy choices are the names registered in
`search_spaces.policies`."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import Field, field_validator

from search_spaces.config.fields import MAX_SEED, MAX_SEED_COUNT, PAPER_SEEDS, Float, Int, Seed, _Section
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


class AlgorithmSection(_Section):
    """`grid`: every seed at every rate; `optuna`: TPE over seed, allocation base and lr."""

    kind: Literal["grid", "optuna"] = "grid"
    samples: Int = Field(4, ge=1)
    seed: Int = Field(0, ge=0, le=MAX_SEED)


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
