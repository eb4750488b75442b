"""`tune_stage.ended_stage_results`: a stage whose every trial had finished before the driver died is read
from Tune's experiment state (its restored searcher could wait forever); any other stage is not."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator.search.tune_stage import ended_stage_results

ROOT = Path(__file__).resolve().parents[1]

STAGE = textwrap.dedent("""
    import sys
    from ray import tune
    from orchestrator.search.ray_runtime import start_ray

    start_ray("local", num_cpus=2)
    unfinished = int(sys.argv[2])

    def trainable(config):
        tune.report({"val_metric": 0.5, "final": config["seed"] != unfinished})

    tune.Tuner(tune.with_resources(trainable, {"cpu": 1}), param_space={"seed": tune.grid_search([7, 42])},
               run_config=tune.RunConfig(storage_path=sys.argv[1], name="stage-1", verbose=0)).fit()
""")


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    """Two search folders with a Tune stage 1 of seeds 7 and 42: every trial final / seed 42 not."""
    out = {}
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    for case, unfinished in (("all_final", 0), ("one_not_final", 42)):
        search_dir = tmp_path_factory.mktemp(case)
        done = subprocess.run([sys.executable, "-c", STAGE, str(search_dir / "stages"), str(unfinished)],
                              env=env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
        out[case] = search_dir
    return out


def _args(search_dir: Path, seeds=(7, 42)):
    cfg = SimpleNamespace(seed_list=list(seeds), search=SimpleNamespace(algorithm=SimpleNamespace(kind="grid")))
    path = search_dir / "stages" / "stage-1"
    return cfg, (path, str(path.parent), None)


@pytest.mark.timeout(300)
def test_a_stage_whose_trials_all_finished_is_read_not_rerun(stages):
    grid = ended_stage_results(*_args(stages["all_final"]))
    assert grid is not None and sorted(r.config["seed"] for r in grid) == [7, 42]
    assert all(r.metrics["final"] for r in grid)


@pytest.mark.timeout(300)
def test_a_stage_with_an_unfinished_trial_is_left_to_tunes_restore(stages):
    assert ended_stage_results(*_args(stages["one_not_final"])) is None


@pytest.mark.timeout(300)
def test_a_stage_with_fewer_trials_than_seeds_or_no_state_is_not_ended(stages, tmp_path):
    assert ended_stage_results(*_args(stages["all_final"], seeds=(7, 42, 123))) is None  # seed 123 never started
    assert ended_stage_results(*_args(tmp_path)) is None  # no Tune state at all
