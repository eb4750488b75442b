"""Loading a search config: a preset name or YAML path, `--set key.path=value` overrides, the
YAML dump stored with a search, and the diff between two configs (what `resume` refuses on).

Every problem is a one-line `ConfigError` naming the file or key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Union

import yaml

from search_spaces.config.fields import PRESET_DIR
from search_spaces.config.messages import suggest, type_name
from search_spaces.config.schema import SearchConfig
from search_spaces.errors import ConfigError


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
        raise ConfigError(f"{source}: expected a mapping of sections, got {type_name(data)}")
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
            raise ConfigError(f"override {item!r}: {where} is {type_name(child)}, not a section with keys")
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



# --- helpers --------------------------------------------------------------------------------


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
            raise ConfigError(f"unknown preset {raw!r}{suggest(raw, names, quote=True)}; "
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
