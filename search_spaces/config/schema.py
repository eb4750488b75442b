"""The whole search config: one pydantic model per YAML section, checked across sections.

A config names the task and its data, the dense model, how the baseline is obtained, the search
(rates, seeds, allocation, selection, bypass, fine-tune budget, selection metric), the latency
protocol and per-trial resources. `SearchConfig.from_dict` raises `ConfigError` with one line
naming the key, the value and what was expected.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError, model_validator

from search_spaces.config.fields import _Section
from search_spaces.config.messages import describe, short, type_name
from search_spaces.config.search import SearchSection, seed_list
from search_spaces.config.sections import (BaselineSection, LatencySection, ModelSection, ResourcesSection,
                                           TaskSection)
from search_spaces.errors import ConfigError


class SearchConfig(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=128, strict=True)  # not bytes (!!binary)
    task: TaskSection
    model: ModelSection = Field(default_factory=ModelSection)
    baseline: BaselineSection = Field(default_factory=BaselineSection)
    search: SearchSection = Field(default_factory=SearchSection)
    latency: LatencySection = Field(default_factory=LatencySection)
    resources: ResourcesSection = Field(default_factory=ResourcesSection)

    @model_validator(mode="after")
    def _cross_checks(self) -> "SearchConfig":
        alloc = self.search.allocation
        if alloc.policy == "layer-wise" and alloc.layer is None:
            raise ValueError("search.allocation.layer=None must name the layer (0..%d) that policy "
                             "layer-wise deactivates" % (self.model.n_layers - 1))
        if alloc.layer is not None and alloc.layer >= self.model.n_layers:
            raise ValueError(f"search.allocation.layer={alloc.layer} must be less than "
                             f"model.n_layers={self.model.n_layers}")
        return self

    @property
    def seed_list(self) -> list[int]:
        """The search seeds as a list (an int count expands to the paper's seeds, then extras)."""
        return seed_list(self.search.seeds)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "config") -> "SearchConfig":
        """Validate a plain mapping; any problem is a one-line `ConfigError`."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping of sections (name, task, model, baseline, "
                              f"search, latency, resources), got {type_name(data)}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(describe(exc, source, cls)) from None
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise ConfigError(f"{source}: invalid config ({type(exc).__name__}: {short(str(exc))})") from None
