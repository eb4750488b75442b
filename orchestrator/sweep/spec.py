"""The sweep file, pure: parsed and expanded into named search configs, plus each config's baseline key.

    name: policies                     # the sweep folder <storage>/<name>/; searches are <name>-<suffix>
    base: cpu-listops-s4d              # preset or YAML path (relative to the sweep file) of every search
    set: {search.rates: [0.3, 0.6]}    # overrides of every search (dotted key: value)
    grid:                              # every combination of these values (`base` may be an axis too)
      search.allocation.policy: [depth-aware, uniform]
    searches:                          # and/or a list, each {name, base, set}
      - {name: one-shot, set: {search.mode: one-shot}}
    max_parallel: null                 # searches running at once (null: all)

A grid search's suffix joins its values in axis order (`policies-depth-aware`); a listed one's is
its `name` (default: its position, 1-based). `baseline_key` is what makes two searches share one
baseline: the task (without where its data lies), the data fingerprint, the model and the baseline
training settings. Every problem is one `ConfigError` line naming the sweep file and the key.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from search_spaces.config import SearchConfig, load_search_config
from search_spaces.config.fields import _Section
from search_spaces.config.messages import describe, type_name
from search_spaces.errors import ConfigError

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
BASE_AXIS = "base"


class SweepEntry(_Section):
    """One listed search: its name suffix, base config and overrides (on top of the sweep's)."""

    name: Optional[str] = Field(None, pattern=NAME)
    base: Optional[str] = None
    set: dict[str, Any] = Field(default_factory=dict)


class SweepFile(_Section):
    """A sweep file (see the module docstring)."""

    name: str = Field(pattern=NAME)
    base: Optional[str] = None
    set: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    searches: list[SweepEntry] = Field(default_factory=list)
    max_parallel: Optional[int] = Field(None, ge=1)

    @field_validator("grid", mode="after")
    @classmethod
    def _axes_have_values(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if not values:
                raise ValueError("grid.%s=[] must list at least one value" % key)
        return v

    @model_validator(mode="after")
    def _something_to_run(self) -> "SweepFile":
        if not self.grid and not self.searches:
            raise ValueError("grid and searches are both empty; expected a grid of values or a list of searches")
        return self


@dataclass(frozen=True)
class PlannedSearch:
    """One search of a sweep: its name and validated config (not yet pointed at a shared baseline)."""

    name: str
    config: SearchConfig


def parse_sweep(text: str, *, source: str) -> SweepFile:
    """The sweep file's YAML text, validated (`ConfigError` naming `source` and the key)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({' '.join(str(exc).split())[:120]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with name, base, grid or searches, got {type_name(data)}")
    try:
        return SweepFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe(exc, source, SweepFile)) from None


def read_sweep(path: str | Path) -> SweepFile:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"sweep file {str(path)!r} cannot be read ({exc})") from None
    return parse_sweep(text, source=str(path))


def slug(value: Any) -> str:
    """A grid value as part of a search name: `depth-aware`, `0.5`, `cpu-listops-s4d`, `0.3_0.6`."""
    if isinstance(value, (list, tuple)):
        return "_".join(slug(v) for v in value)
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if isinstance(value, str) and text.lower().endswith((".yaml", ".yml")):
        text = Path(text).stem
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "x"


def _base_path(base: str, relative_to: Path) -> str:
    """A YAML path relative to the sweep file's folder; a preset name as it is."""
    looks_like_path = base.lower().endswith((".yaml", ".yml")) or "/" in base
    return str(relative_to / base) if looks_like_path and not Path(base).is_absolute() else base


def search_config(name: str, base: str | None, overrides: dict[str, Any], *, source: str,
                  relative_to: Path, where: str) -> SearchConfig:
    """`base` with `overrides` and `name` set, validated; errors name the sweep file and `where`."""
    if base is None:
        raise ConfigError(f"{source}: {where}: no base config; set `base` (a preset or YAML path)")
    items = [f"{key}={json.dumps(value)}" for key, value in overrides.items()] + [f"name={json.dumps(name)}"]
    try:
        return load_search_config(_base_path(base, relative_to), items)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {where}: {exc}") from None


def expand_sweep(sweep: SweepFile, *, source: str, relative_to: Path) -> list[PlannedSearch]:
    """Every search of the sweep, grid combinations first (axis order as written), then the list."""
    planned = []
    axes = list(sweep.grid)
    for combo in itertools.product(*(sweep.grid[a] for a in axes)) if axes else ():
        values = dict(zip(axes, combo))
        name = f"{sweep.name}-" + "-".join(slug(v) for v in combo)
        base = values.pop(BASE_AXIS, sweep.base)
        where = "grid " + ", ".join(f"{a}={json.dumps(v)}" for a, v in zip(axes, combo))
        planned.append(PlannedSearch(name, search_config(name, base, {**sweep.set, **values}, source=source,
                                                         relative_to=relative_to, where=where)))
    for i, entry in enumerate(sweep.searches, start=1):
        name = f"{sweep.name}-{entry.name or i}"
        planned.append(PlannedSearch(name, search_config(name, entry.base or sweep.base, {**sweep.set, **entry.set},
                                                         source=source, relative_to=relative_to,
                                                         where=f"searches[{i - 1}]")))
    seen: set[str] = set()
    for p in planned:
        if p.name in seen:
            raise ConfigError(f"{source}: two searches are named {p.name!r}; give the listed searches distinct names")
        seen.add(p.name)
    return planned


def baseline_key(cfg: SearchConfig, data_fingerprint: str) -> str | None:
    """The key of the baseline `cfg` trains (None: it starts from its own `baseline.checkpoint`).

    Equal keys = the same dense model would be trained: same task settings (where the data lies
    does not count, its fingerprint does), same model, same baseline training, on the same kind of
    device (a search asking for GPUs trains its baseline on one; CPU keys name no device, as before)."""
    if cfg.baseline.checkpoint is not None:
        return None
    facts = {"task": cfg.task.model_dump(mode="json", exclude={"data_dir", "generate"}),
             "data": data_fingerprint, "model": cfg.model.model_dump(mode="json"),
             "train": cfg.baseline.train.model_dump(mode="json")}
    if cfg.resources.gpu:
        facts["device"] = "gpu"
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def with_baseline(cfg: SearchConfig, checkpoint: str | Path) -> SearchConfig:
    """`cfg` starting from the baseline checkpoint folder `checkpoint` (stage 0 copies it in)."""
    data = cfg.model_dump(mode="json")
    data["baseline"]["checkpoint"] = str(checkpoint)
    return SearchConfig.from_dict(data, source=f"search {cfg.name}")
