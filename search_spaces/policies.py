"""Name -> function registries for the search's policies (the config's choices are their names).

- `ALLOCATION`: how many channels each layer loses at a rate
  (`fn(rate, n_layers, channels, *, base, seed, layer) -> Allocation`, see `allocation`);
- `SELECTION`: which kept channels of one layer go
  (`fn(kept, n, *, rng, ranked, candidates) -> pruned channels`, see `selection`);
- `IMPORTANCE`: per-channel scores of a layer's SSM response (`fn(K, D, L) -> (H,)`, see `importance`).

A policy module registers its functions with `@REGISTRY.register("name")`; `SearchConfig`'s literal
choices (`search.allocation.policy`, `search.selection.policy`, `search.selection.score`) are the
registries' names, so adding a policy is one decorated function. Importing this module fills all
three registries, whichever module was imported first.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

from search_spaces.errors import ConfigError


class Registry:
    """Named functions of one kind; an unknown name is a one-line `ConfigError` naming the key."""

    def __init__(self, key: str):
        self.key = key  # the config key that names an entry, for messages
        self._fns: dict[str, Callable] = {}
        self._info: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **info: Any) -> Callable[[Callable], Callable]:
        """Decorator: file `fn` under `name`, with optional facts about it (`info(name)`)."""
        def add(fn: Callable) -> Callable:
            if name in self._fns:
                raise ValueError(f"{self.key}: {name!r} is registered twice")
            self._fns[name], self._info[name] = fn, dict(info)
            return fn
        return add

    def get(self, name: str) -> Callable:
        if name not in self._fns:
            raise ConfigError(f"{self.key}={name!r} must be one of {', '.join(self._fns)}")
        return self._fns[name]

    def info(self, name: str) -> dict[str, Any]:
        self.get(name)
        return self._info[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._fns)

    def literal(self) -> Any:
        """`Literal[<every name>]`, for a pydantic field that picks one entry."""
        return Literal[self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._fns


ALLOCATION = Registry("search.allocation.policy")
SELECTION = Registry("search.selection.policy")
IMPORTANCE = Registry("search.selection.score")

# the policy modules register into the registries above (they import this module first)
import search_spaces.allocation  # noqa: E402,F401
import search_spaces.importance  # noqa: E402,F401
import search_spaces.selection  # noqa: E402,F401
