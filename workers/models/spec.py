"""ModelSpec: the architecture of an S4/S4D classifier as plain data.

A spec names everything needed to rebuild a model (checkpoints store `to_dict()`); pruning state
(kept channels per layer, bypass) lives beside it, not in it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from search_spaces.errors import ConfigError

_CHOICES = {
    "kind": ("s4d", "s4"),
    "input_kind": ("tokens", "real"),
    "norm": ("layer", "batch"),
    "pool": ("mean", "last"),
    "init": ("lin", "inv", "legs"),
    "disc": ("zoh", "bilinear"),
}


@dataclass
class ModelSpec:
    """Encoder -> n_layers x (SSM conv (H channels, state N) -> GELU -> Linear(H, 2H) + GLU) -> pool -> decoder."""

    kind: str = "s4d"
    d_input: int = 1
    d_output: int = 2
    input_kind: str = "tokens"
    d_model: int = 128
    n_layers: int = 4
    d_state: int = 64
    dropout: float = 0.0
    norm: str = "batch"
    prenorm: bool = False
    bidirectional: bool = False
    pool: str = "mean"
    init: str = "lin"
    disc: str | None = None  # None: the kind's own (zoh for S4D, bilinear for S4's DPLR kernel)
    trainable_B: bool = False
    dt_min: float = 0.001
    dt_max: float = 0.1
    ssm_lr: float | None = None  # None: the S4 authors' default, min(0.001, the run's lr) (workers.optim)

    def __post_init__(self) -> None:
        if self.disc is None:
            self.disc = "bilinear" if self.kind == "s4" else "zoh"
        for key, choices in _CHOICES.items():
            value = getattr(self, key)
            if value not in choices:
                raise ConfigError(f"model.{key}: got {value!r}, expected one of {', '.join(choices)}")
        for key in ("d_input", "d_output", "d_model", "n_layers", "d_state"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"model.{key}: got {value!r}, expected a positive integer")
        if self.d_state % 2:
            raise ConfigError(f"model.d_state: got {self.d_state}, expected an even number (N/2 conjugate pairs)")
        for key in ("prenorm", "bidirectional", "trainable_B"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"model.{key}: got {getattr(self, key)!r}, expected true or false")
        for key in ("dropout", "dt_min", "dt_max", "ssm_lr"):
            value = getattr(self, key)
            if key == "ssm_lr" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"model.{key}: got {value!r}, expected a number")
            setattr(self, key, float(value))
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout: got {self.dropout}, expected 0 <= dropout < 1")
        if not 0.0 < self.dt_min <= self.dt_max:
            raise ConfigError(f"model.dt_min/dt_max: got {self.dt_min}/{self.dt_max}, expected 0 < dt_min <= dt_max")
        if self.ssm_lr is not None and self.ssm_lr <= 0:
            raise ConfigError(f"model.ssm_lr: got {self.ssm_lr}, expected a positive number or null")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        if not isinstance(d, dict):
            raise ConfigError(f"model: got {type(d).__name__}, expected a mapping of ModelSpec fields")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"model: unknown key(s) {', '.join(map(str, unknown))}; expected some of {', '.join(sorted(known))}")
        if d.get("kind") == "s4" and d.get("disc") == "zoh":  # saved before S4 refused zoh: it always ran bilinear
            d = {**d, "disc": "bilinear"}
        return cls(**d)
