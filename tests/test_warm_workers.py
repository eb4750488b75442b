"""Trial actors on an embedded Ray start in Ray's idle workers (no per-actor runtime environment)
that already imported the trial's modules, keep the variables Tune would have given them, and
fall back to Tune's way when the driver's environment changed after `ray.init`."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator.search import ray_runtime as warm_workers

ROOT = Path(__file__).resolve().parents[1]


def test_inherited_environment_must_hold_every_variable_with_its_value():
    assert warm_workers.inherits_tune_env({"PL_DISABLE_FORK": "1", "HOME": "/x"}, {"PL_DISABLE_FORK": "1"})
    assert not warm_workers.inherits_tune_env({}, {"PL_DISABLE_FORK": "1"})
    assert not warm_workers.inherits_tune_env({"AWS_ACCESS_KEY_ID": "old"}, {"AWS_ACCESS_KEY_ID": "new"})
    assert warm_workers.inherits_tune_env({}, {})


def test_tune_actor_env_follows_the_driver_environment(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-1")
    env = warm_workers.tune_actor_env()
    assert env["AWS_ACCESS_KEY_ID"] == "key-1" and env["PL_DISABLE_FORK"] == "1"
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    assert "AWS_ACCESS_KEY_ID" not in warm_workers.tune_actor_env()


def test_install_then_uninstall_restores_tunes_class_cache():
    from ray.tune.execution import class_cache

    original = class_cache._ActorClassCache.get
    try:
        assert warm_workers.install(dict(os.environ))
        assert class_cache._ActorClassCache.get is not original
        assert warm_workers.install(dict(os.environ))  # idempotent: still one hook over Tune's own
    finally:
        warm_workers.uninstall()
    assert class_cache._ActorClassCache.get is original


SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    import psutil
    from ray import tune
    from orchestrator.search.loop import start_ray
    from orchestrator.search.ray_runtime import wait_for_idle_workers

    start_ray("local", num_cpus=2)
    assert wait_for_idle_workers(2, timeout_s=120)  # Ray's idle workers warm, as after a search's stage 0
    idle = {c.pid for c in psutil.Process().children(recursive=True) if c.name() == "ray::IDLE"}
    if sys.argv[1] == "changed":
        os.environ["AWS_ACCESS_KEY_ID"] = "set-after-ray-init"  # the workers did not inherit this

    def trainable(config):
        tune.report({"pid": os.getpid(), "pl": os.environ.get("PL_DISABLE_FORK"),
                     "aws": os.environ.get("AWS_ACCESS_KEY_ID"), "preloaded": "workers.training" in sys.modules})

    grid = tune.Tuner(tune.with_resources(trainable, {"cpu": 1}), param_space={"s": tune.grid_search([1, 2])},
                      tune_config=tune.TuneConfig(max_concurrent_trials=2),
                      run_config=tune.RunConfig(storage_path=sys.argv[2], name="warm", verbose=0)).fit()
    print("RESULT " + json.dumps({"idle": sorted(idle), "trials": [r.metrics for r in grid]}))
""")


def _run(tmp_path, mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "PL_DISABLE_FORK")}
    env.update(RAY_AUTH_MODE="disabled", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode, str(tmp_path / "tune")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.mark.timeout(300)
def test_trial_actors_run_in_rays_idle_workers_with_tunes_variables(tmp_path):
    out = _run(tmp_path, "same")
    assert len(out["idle"]) >= 2, out
    pids = {t["pid"] for t in out["trials"]}
    assert len(pids) == 2 and pids <= set(out["idle"]), out  # no fresh worker process per trial slot
    assert all(t["pl"] == "1" for t in out["trials"])  # Tune's default variable, inherited
    assert all(t["preloaded"] for t in out["trials"])  # the worker imported the trial's modules before


def test_preload_is_on_by_default_and_off_with_s4op_preload_0(monkeypatch):
    monkeypatch.delenv("S4OP_PRELOAD", raising=False)
    config = warm_workers.system_config(4)
    assert {"ray.tune", "torch", "workers.trial"} <= set(config["preload_python_modules"])
    assert config["num_workers_soft_limit"] == 4  # idle workers kept while a stage reserves its CPUs
    monkeypatch.setenv("S4OP_PRELOAD", "0")
    assert warm_workers.system_config(4) == {"num_workers_soft_limit": 4}


@pytest.mark.timeout(300)
def test_a_variable_set_after_ray_init_still_reaches_the_trials(tmp_path):
    out = _run(tmp_path, "changed")
    assert all(t["aws"] == "set-after-ray-init" and t["pl"] == "1" for t in out["trials"]), out
    assert not {t["pid"] for t in out["trials"]} & set(out["idle"])  # Tune's runtime env: fresh workers
