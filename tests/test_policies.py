"""Policy registries: the config's choices are the registered names; a new policy is one function."""

from __future__ import annotations

import pytest

from search_spaces.allocation import allocate
from search_spaces.config import config_from_yaml
from search_spaces.errors import ConfigError
from search_spaces.policies import ALLOCATION, IMPORTANCE, SELECTION, Registry

MINIMAL = "name: t\ntask: {name: listops, data_dir: data/x}\n"


def test_registries_hold_the_shipped_policies_in_order():
    assert ALLOCATION.names() == ("depth-aware", "uniform", "random", "layer-wise")
    assert SELECTION.names() == ("random", "importance", "mixed")
    assert IMPORTANCE.names() == ("hinf", "energy")
    assert [SELECTION.info(n)["needs_scores"] for n in SELECTION.names()] == [False, True, True]


@pytest.mark.parametrize("key, registry", [("search.allocation.policy", ALLOCATION),
                                           ("search.selection.policy", SELECTION),
                                           ("search.selection.score", IMPORTANCE)])
def test_config_accepts_exactly_the_registered_names(key, registry):
    for name in registry.names():
        cfg = config_from_yaml(MINIMAL, overrides=[f"{key}={name}", "search.allocation.layer=0"])
        section, field = key.rsplit(".", 1)
        node = cfg
        for part in section.split("."):
            node = getattr(node, part)
        assert getattr(node, field) == name
    with pytest.raises(ConfigError, match=f"{key}='nope' must be one of {', '.join(registry.names())}"):
        config_from_yaml(MINIMAL, overrides=[f"{key}=nope"])


def test_a_registered_function_is_what_allocate_calls():
    registry = Registry("x.policy")

    @registry.register("half")
    def half(rate, n_layers, channels, **_):
        return [channels // 2] * n_layers

    assert registry.get("half")(0.1, 3, 8) == [4, 4, 4]
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("half")(half)
    with pytest.raises(ConfigError, match=r"x.policy='full' must be one of half"):
        registry.get("full")
    assert allocate("uniform", 0.5, 2, 8) == ALLOCATION.get("uniform")(0.5, 2, 8).pruned == [4, 4]
