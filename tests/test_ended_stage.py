"""`_ended_stage_results`: a stage whose every trial had finished before the driver died is read
from Tune's experiment state (its restored searcher could wait forever); any other stage is not."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator.search.loop import _ended_stage_results

ROOT = Path(__file__).resolve().parents[1]

STAGE = textwrap.dedent("""
    import sys
    from ray import tune
    from orchestrator.search.loop import start_ray

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


def _ctx(search_dir: Path, seeds=(7, 42)):
    notes = []
    cfg = SimpleNamespace(seed_list=list(seeds), search=SimpleNamespace(algorithm=SimpleNamespace(kind="grid")))
    return SimpleNamespace(search_dir=search_dir, cfg=cfg, store=None, view=SimpleNamespace(note=notes.append)), notes


@pytest.mark.timeout(300)
def test_a_stage_whose_trials_all_finished_is_read_not_rerun(stages):
    ctx, notes = _ctx(stages["all_final"])
    grid = _ended_stage_results(ctx, 1)
    assert grid is not None and sorted(r.config["seed"] for r in grid) == [7, 42]
    assert all(r.metrics["final"] for r in grid)
    assert notes and "every trial had finished" in notes[0]


@pytest.mark.timeout(300)
def test_a_stage_with_an_unfinished_trial_is_left_to_tunes_restore(stages):
    ctx, notes = _ctx(stages["one_not_final"])
    assert _ended_stage_results(ctx, 1) is None and not notes


@pytest.mark.timeout(300)
def test_a_stage_with_fewer_trials_than_seeds_or_no_state_is_not_ended(stages, tmp_path):
    ctx, _ = _ctx(stages["all_final"], seeds=(7, 42, 123))
    assert _ended_stage_results(ctx, 1) is None  # seed 123 never started
    ctx, _ = _ctx(tmp_path)
    assert _ended_stage_results(ctx, 1) is None  # no Tune state at all
