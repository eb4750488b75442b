"""The trial space a stage searches: seeds for a grid, seed/base/lr ranges for Optuna."""

from __future__ import annotations

from search_spaces.config import config_from_yaml
from search_spaces.tune_space import ALLOC_BASE_HIGH, ALLOC_BASE_LOW, Choice, Grid, LogUniform, Uniform, trial_space

MINIMAL = "name: t\ntask: {name: listops, data_dir: data/x}\n"


def test_grid_tries_every_seed_once():
    cfg = config_from_yaml(MINIMAL, overrides=["search.seeds=[3,1,2]"])
    assert trial_space(cfg) == {"seed": Grid((3, 1, 2))}


def test_optuna_samples_seed_base_and_lr_around_the_finetune_lr():
    cfg = config_from_yaml(MINIMAL, overrides=["search.algorithm.kind=optuna", "search.seeds=2",
                                               "search.finetune.lr=0.003"])
    space = trial_space(cfg)
    assert space["seed"] == Choice((7, 42))
    assert space["alloc_base"] == Uniform(ALLOC_BASE_LOW, ALLOC_BASE_HIGH)
    assert isinstance(space["lr"], LogUniform)
    assert space["lr"].low < 0.003 < space["lr"].high
    assert abs(space["lr"].low * space["lr"].high - 0.003**2) < 1e-12  # centred on the lr (log scale)
