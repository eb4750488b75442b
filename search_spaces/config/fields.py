"""Shared pieces of the config schema: the section base, strict numbers and the fixed facts.

`_Section` forbids unknown keys, NaN and infinities and validates defaults; `Int` and `Float` refuse
true/false (YAML reads `yes` as a bool). Validators write `{key}` where the key's dotted path goes;
`messages` fills it in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"
PAPER_SEEDS = (7, 42, 123, 2024, 31650)
MAX_SEED = 2**32 - 1
MAX_SEED_COUNT = 1000

TASK_NAMES = ("listops", "pathfinder", "imdb", "ecg")
OWN_TASK_NAMES = ("parquet", "python")  # one's own data: facts read from the files or the loader
GENERATE_OPTIONS = {
    "listops": ("min_len", "max_len", "max_depth", "max_args"),
    "pathfinder": ("resolution", "contour_length", "n_distractors"),
    "imdb": ("min_words", "max_words"),
    "ecg": ("n_samples", "fs"),
}


def _reject_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("{key}=%r must be a number, not true/false" % value)
    return value


Int = Annotated[int, BeforeValidator(_reject_bool)]
Float = Annotated[float, BeforeValidator(_reject_bool)]
Seed = Annotated[Int, Field(ge=0, le=MAX_SEED)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True)
