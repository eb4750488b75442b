"""One-line messages for config problems: a pydantic error -> "key=value must be ...".

`describe` turns the first problem of a `ValidationError` into one line naming the dotted key, the
value and what was expected (with "did you mean" for near-miss keys); the rest are counted.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Optional, get_args, get_origin

from pydantic import BaseModel, ValidationError


def type_name(x: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number", bool: "true/false",
            type(None): "nothing"}.get(type(x), type(x).__name__)


def short(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def suggest(word: str, choices: Iterable[str], quote: bool = True) -> str:
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


def _section_fields(root: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the section at `loc` under `root` (for did-you-mean on unknown keys)."""
    model: Any = root
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


def describe(exc: ValidationError, source: str, root: type[BaseModel]) -> str:
    """One line for `exc`, raised validating `root` (the config model) from `source`."""
    errors = exc.errors(include_url=False)
    # a bad `search.seeds` fails both members of its Union: report the first member's problems only
    branch = _union_tag(errors[0]["loc"])
    errors = [e for e in errors if _union_tag(e["loc"]) in (None, branch)]
    first = _describe_one(errors[0], root)
    more = len({_path(e["loc"]) for e in errors}) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else ""
    where = "" if source in ("config", "<string>") else f" [{source}]"
    return f"{first}{suffix}{where}"


def _union_tag(loc: tuple) -> Optional[str]:
    for i, part in enumerate(loc):
        if i and loc[i - 1] == "seeds" and isinstance(part, str) and not part.isidentifier():
            return part
    return None


def _describe_one(err: dict, root: type[BaseModel]) -> str:
    loc = tuple(err.get("loc", ()))
    path = _path(loc)
    kind = err.get("type", "")
    value = err.get("input")
    shown = f"{path}={short(repr(value))}"
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        fields = _section_fields(root, tuple(p for p in loc[:-1]))
        hint = suggest(key, fields) if fields else ""
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
        return f"{path or 'config'} must be a mapping of keys, got {type_name(value)}"
    msg = str(err.get("msg", "is invalid"))
    msg = msg.replace("Input should be", "must be").replace("Input ", "")
    if msg.startswith("String should match pattern"):
        msg = "must be a simple name (letters, digits, '.', '_', '-'; used as a folder name)"
    return f"{shown} {msg[0].lower() + msg[1:] if msg else 'is invalid'}"
