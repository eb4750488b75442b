"""The search config: one pydantic model per YAML section, presets, overrides and diffs.

A config names the task and its data, the dense model, how the baseline is obtained, the search
(rates, seeds, allocation, selection, bypass, fine-tune budget, selection metric), the latency
protocol and per-trial resources. `load_search_config` accepts a preset name (a file stem in
`search_spaces/presets/`) or a YAML path, applies `--set key.path=value` overrides, and raises
`ConfigError` with one line naming the key, the value and what was expected.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, Optional, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from search_spaces.errors import ConfigError

PRESET_DIR = Path(__file__).parent / "presets"
PAPER_SEEDS = (7, 42, 123, 2024, 31650)
MAX_SEED = 2**32 - 1
MAX_SEED_COUNT = 1000

TASK_NAMES = ("listops", "pathfinder", "imdb", "ecg")
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


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True)


# --- task -------------------------------------------------------------------------------------


class GenerateSection(_Section):
    """Synthetic data to generate when `task.data_dir` holds none (sizes per split)."""

    train: Int = Field(2000, ge=1)
    val: Int = Field(400, ge=1)
    test: Int = Field(400, ge=1)
    seed: Int = Field(0, ge=0, le=MAX_SEED)
    options: dict[str, Any] = Field(default_factory=dict)


class TaskSection(_Section):
    name: Literal["listops", "pathfinder", "imdb", "ecg"]
    data_dir: Path
    max_len: Optional[Int] = Field(None, ge=1)
    val_fraction: Float = Field(0.2, gt=0.0, lt=1.0)
    generate: Optional[GenerateSection] = None

    @field_validator("data_dir", mode="after")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        if str(v).strip() == "" or "\0" in str(v):
            raise ValueError("{key}=%r must be a folder path" % str(v))
        return Path(os.path.abspath(os.path.expanduser(v)))

    @model_validator(mode="after")
    def _generate_options(self) -> "TaskSection":
        if self.generate is not None:
            known = GENERATE_OPTIONS[self.name]
            for key in self.generate.options:
                if key not in known:
                    raise ValueError(
                        f"unknown key 'task.generate.options.{key}' for task {self.name}"
                        f"{_suggest(str(key), known)}"
                    )
        return self


# --- model ------------------------------------------------------------------------------------


class ModelSection(_Section):
    """The dense backbone: H = d_model channels per layer, N = d_state, n_layers blocks."""

    kind: Literal["s4d", "s4"] = "s4d"
    d_model: Int = Field(64, ge=1)
    n_layers: Int = Field(4, ge=1)
    d_state: Int = Field(64, ge=2)
    dropout: Float = Field(0.0, ge=0.0, lt=1.0)
    norm: Literal["batch", "layer"] = "batch"
    prenorm: bool = False
    bidirectional: bool = False
    pool: Literal["mean", "last"] = "mean"
    init: Literal["lin", "inv", "legs"] = "lin"
    disc: Literal["zoh", "bilinear"] = "zoh"
    trainable_B: bool = False
    dt_min: Float = Field(0.001, gt=0.0)
    dt_max: Float = Field(0.1, gt=0.0)
    ssm_lr: Float = Field(0.001, gt=0.0)

    @field_validator("d_state", mode="after")
    @classmethod
    def _even_state(cls, v: int) -> int:
        if v % 2:
            raise ValueError("{key}=%d must be even (N/2 conjugate pairs)" % v)
        return v

    @model_validator(mode="after")
    def _dt_range(self) -> "ModelSection":
        if self.dt_min > self.dt_max:
            raise ValueError(f"model.dt_min={self.dt_min} must not exceed model.dt_max={self.dt_max}")
        return self

    def to_spec_dict(self, d_input: int, d_output: int, input_kind: str) -> dict[str, Any]:
        """Plain dict for `workers.models.spec.ModelSpec.from_dict`."""
        d = self.model_dump(mode="python")
        return {"kind": d["kind"], "d_input": int(d_input), "d_output": int(d_output),
                "input_kind": input_kind, **{k: d[k] for k in (
                    "d_model", "n_layers", "d_state", "dropout", "norm", "prenorm",
                    "bidirectional", "pool", "init", "disc", "trainable_B", "dt_min", "dt_max",
                    "ssm_lr")}}


# --- baseline ---------------------------------------------------------------------------------


class TrainSection(_Section):
    """How the dense baseline is trained when no checkpoint is given."""

    epochs: Int = Field(10, ge=1)
    batch_size: Int = Field(50, ge=1)
    lr: Float = Field(0.001, gt=0.0)
    weight_decay: Float = Field(0.05, ge=0.0)
    warmup_epochs: Int = Field(1, ge=0)
    grad_clip: Optional[Float] = Field(1.0, gt=0.0)
    patience: Int = Field(5, ge=1)
    seed: Int = Field(0, ge=0, le=MAX_SEED)


class BaselineSection(_Section):
    checkpoint: Optional[Path] = None
    train: TrainSection = Field(default_factory=TrainSection)

    @field_validator("checkpoint", mode="after")
    @classmethod
    def _absolute(cls, v: Optional[Path]) -> Optional[Path]:
        if v is None:
            return None
        if str(v).strip() == "" or "\0" in str(v):
            raise ValueError("{key}=%r must be a checkpoint folder or null" % str(v))
        return Path(os.path.abspath(os.path.expanduser(v)))


# --- search -----------------------------------------------------------------------------------


class AllocationSection(_Section):
    """How many channels each layer loses at a rate (see `search_spaces.allocation`)."""

    policy: Literal["depth-aware", "uniform", "random", "layer-wise"] = "depth-aware"
    base: Float = Field(2.0, gt=1.0)
    layer: Optional[Int] = Field(None, ge=0)


class SelectionSection(_Section):
    """Which kept channels go (see `search_spaces.selection`)."""

    policy: Literal["random", "importance", "mixed"] = "random"
    score: Literal["hinf", "energy"] = "hinf"
    candidates: Float = Field(2.0, ge=1.0)


class FinetuneSection(_Section):
    epochs: Int = Field(5, ge=1)
    lr: Float = Field(1.0e-4, gt=0.0)
    weight_decay: Float = Field(1.0e-5, ge=0.0)
    patience: Int = Field(2, ge=1)
    batch_size: Int = Field(50, ge=1)


class AlgorithmSection(_Section):
    """`grid`: every seed at every rate; `optuna`: TPE over seed, allocation base and lr;
    `optuna-pareto`: Optuna's multi-objective TPE over the same space, val metric and an in-trial
    latency proxy together (the stage's best: the most accurate point on the front)."""

    kind: Literal["grid", "optuna", "optuna-pareto"] = "grid"
    samples: Int = Field(4, ge=1)
    seed: Int = Field(0, ge=0, le=MAX_SEED)


class SchedulerSection(_Section):
    """Seed early stopping: `asha` stops the seeds of a stage falling behind after `grace_epochs`
    fine-tune epochs (Tune's ASHA, `reduction` = its reduction factor); `none` runs every seed to the end."""

    kind: Literal["none", "asha"] = "none"
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


Seed = Annotated[Int, Field(ge=0, le=MAX_SEED)]


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
            raise ValueError("{key}=%s must be a list of seeds or a seed count" % _short(repr(v)))
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


# --- latency and resources --------------------------------------------------------------------


class LatencySection(_Section):
    """Latency protocol: p50/p90 over `repeats` timed runs after `warmup`, per batch size."""

    batch_sizes: list[Annotated[Int, Field(ge=1)]] = Field(default_factory=lambda: [1], min_length=1)
    threads: Int = Field(1, ge=1)
    repeats: Int = Field(30, ge=30)
    warmup: Int = Field(5, ge=0)
    device: Literal["cpu", "cuda"] = "cpu"


class ResourcesSection(_Section):
    """Per-trial Ray resources; `max_concurrent` null lets Ray pack trials."""

    cpu: Float = Field(1.0, gt=0.0)
    gpu: Float = Field(0.0, ge=0.0)
    max_concurrent: Optional[Int] = Field(None, ge=1)


# --- the whole config -------------------------------------------------------------------------


class SearchConfig(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=128)
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
                              f"search, latency, resources), got {_type_name(data)}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, source)) from None
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise ConfigError(f"{source}: invalid config ({type(exc).__name__}: {_short(str(exc))})") from None


# --- loading ----------------------------------------------------------------------------------


def preset_names() -> list[str]:
    """Names of the shipped presets (`paper-<task>-<model>`, `cpu-<task>-<model>`)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_search_config(path_or_preset: Union[str, os.PathLike], overrides: Iterable[str] = ()) -> SearchConfig:
    """A preset name or YAML path, with `key.path=value` overrides (value parsed as YAML)."""
    text, source = _read_source(path_or_preset)
    return config_from_yaml(text, source=source, overrides=overrides)


def config_from_yaml(text: str, *, source: str = "<string>", overrides: Iterable[str] = ()) -> SearchConfig:
    """Parse YAML text into a validated `SearchConfig` (raises `ConfigError` only)."""
    data = _parse_yaml(text, source)
    if data is None:
        raise ConfigError(f"{source}: empty config; expected a mapping of sections")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {_type_name(data)}")
    for item in overrides:
        data = apply_override(data, item)
    return SearchConfig.from_dict(data, source=source)


def apply_override(data: dict, item: str) -> dict:
    """Return a copy of `data` with `key.path=value` set (value parsed as YAML)."""
    if not isinstance(item, str) or "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.path=value (e.g. search.rates=[0.1,0.5])")
    key, _, raw = item.partition("=")
    parts = [p.strip() for p in key.strip().split(".")]
    if not all(parts):
        raise ConfigError(f"override {item!r}: key {key!r} must be a dotted path like search.finetune.lr")
    value = _parse_yaml(raw, f"override {key}")
    out = _copy_tree(data)
    node = out
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise ConfigError(f"override {item!r}: {where} is {_type_name(child)}, not a section with keys")
        node = child
    node[parts[-1]] = value
    return out


def dump_config(cfg: SearchConfig) -> str:
    """YAML text of a config (absolute paths), to store with a search; loads back equal."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, default_flow_style=False)


def config_diff(a: SearchConfig, b: SearchConfig) -> list[str]:
    """Lines `key.path: old -> new` for every leaf that differs (lists compare whole)."""
    fa, fb = _flatten(a.model_dump(mode="json")), _flatten(b.model_dump(mode="json"))
    keys = list(fa) + [k for k in fb if k not in fa]
    missing = object()
    lines = []
    for k in keys:
        va, vb = fa.get(k, missing), fb.get(k, missing)
        if va != vb:
            lines.append(f"{k}: {_fmt(va, missing)} -> {_fmt(vb, missing)}")
    return lines


# --- helpers ----------------------------------------------------------------------------------


def _read_source(path_or_preset: Union[str, os.PathLike]) -> tuple[str, str]:
    raw = os.fspath(path_or_preset)
    path = Path(raw).expanduser()
    looks_like_path = path.suffix.lower() in (".yaml", ".yml") or os.sep in raw or "/" in raw
    if looks_like_path and not path.exists() and "/" not in raw and os.sep not in raw \
            and (PRESET_DIR / f"{path.stem}.yaml").is_file():
        raw, looks_like_path = path.stem, False  # "cpu-listops-s4d.yaml" names the preset
    if not looks_like_path and not path.exists():
        preset = PRESET_DIR / f"{raw}.yaml"
        if not preset.is_file():
            names = preset_names()
            raise ConfigError(f"unknown preset {raw!r}{_suggest(raw, names, quote=True)}; "
                              f"known presets: {', '.join(names)} (or give a YAML file path)")
        path = preset
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    if path.is_dir():
        raise ConfigError(f"config file {str(path)!r} is a folder, expected a YAML file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text, expected YAML") from None
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    return text, str(path)


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{source}: not valid YAML{where}: {problem}") from None
    except (RecursionError, ValueError, TypeError, OverflowError) as exc:
        raise ConfigError(f"{source}: not valid YAML: {type(exc).__name__}") from None


def _copy_tree(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _copy_tree(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_copy_tree(v) for v in x]
    return x


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _fmt(v: Any, missing: object) -> str:
    return "(absent)" if v is missing else json.dumps(v)


def _type_name(x: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number", bool: "true/false",
            type(None): "nothing"}.get(type(x), type(x).__name__)


def _short(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _suggest(word: str, choices: Iterable[str], quote: bool = True) -> str:
    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)" if quote else f" (did you mean {close[0]}?)"
    return f" (expected one of {', '.join(choices)})"


def _path(loc: tuple) -> str:
    """('search', 'rates', 2) -> 'search.rates[2]'; union branch tags are dropped."""
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif i and loc[i - 1] == "seeds" and isinstance(part, str) and not part.isidentifier():
            continue  # pydantic's tag for a member of the seeds Union, not a key
        else:
            out += ("." if out else "") + str(part)
    return out


def _section_fields(loc: tuple) -> list[str]:
    """Field names of the section at `loc` (for did-you-mean on unknown keys)."""
    model: Any = SearchConfig
    for part in loc:
        if isinstance(part, int) or not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
        field = model.model_fields.get(part)
        if field is None:
            return []
        model = _model_of(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is not None:
        for arg in get_args(annotation):
            m = _model_of(arg)
            if m is not None:
                return m
    return None


def _describe(exc: ValidationError, source: str) -> str:
    errors = exc.errors(include_url=False)
    # a bad `search.seeds` fails both members of its Union: report the first member's problems only
    branch = _union_tag(errors[0]["loc"])
    errors = [e for e in errors if _union_tag(e["loc"]) in (None, branch)]
    first = _describe_one(errors[0])
    more = len({_path(e["loc"]) for e in errors}) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else ""
    where = "" if source in ("config", "<string>") else f" [{source}]"
    return f"{first}{suffix}{where}"


def _union_tag(loc: tuple) -> Optional[str]:
    for i, part in enumerate(loc):
        if i and loc[i - 1] == "seeds" and isinstance(part, str) and not part.isidentifier():
            return part
    return None


def _describe_one(err: dict) -> str:
    loc = tuple(err.get("loc", ()))
    path = _path(loc)
    kind = err.get("type", "")
    value = err.get("input")
    shown = f"{path}={_short(repr(value))}"
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        fields = _section_fields(tuple(p for p in loc[:-1]))
        hint = _suggest(key, fields) if fields else ""
        return f"unknown key {path!r}{hint}"
    if kind == "invalid_key":
        where = _path(loc[:-1])
        return f"key {value!r}{' in ' + where if where else ''} must be a string naming a setting"
    if kind == "missing":
        return f"missing key {path!r}"
    if kind in ("value_error", "assertion_error"):
        ctx = err.get("ctx") or {}
        msg = str(ctx.get("error", err.get("msg", "")))
        # field validators write "{key}" for the path; model validators write whole messages
        return msg.replace("{key}", path)
    if kind == "literal_error":
        expected = str((err.get("ctx") or {}).get("expected", ""))
        expected = expected.replace("'", "").replace(" or ", ", ")
        return f"{shown} must be one of {expected}"
    if kind in ("path_type", "path_parsing"):
        return f"{shown} must be a path"
    if kind == "model_type" or kind == "dict_type":
        return f"{path or 'config'} must be a mapping of keys, got {_type_name(value)}"
    msg = str(err.get("msg", "is invalid"))
    msg = msg.replace("Input should be", "must be").replace("Input ", "")
    if msg.startswith("String should match pattern"):
        msg = "must be a simple name (letters, digits, '.', '_', '-'; used as a folder name)"
    return f"{shown} {msg[0].lower() + msg[1:] if msg else 'is invalid'}"
