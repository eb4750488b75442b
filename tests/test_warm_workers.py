"""Ray for a search: Tune's settings are set when a search starts Ray, never on import; the embedded
Ray's workers preload the trial's modules; Tune is driven through its public API only (a trial
actor gets Tune's own runtime environment and variables)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator.search import ray_runtime

ROOT = Path(__file__).resolve().parents[1]


def test_importing_the_search_modules_leaves_tunes_settings_alone():
    code = ("import os; before = dict(os.environ)\n"
            "import orchestrator.search.loop, orchestrator.search.status, orchestrator.search.sync, orchestrator.cli\n"
            "from orchestrator.search.folder import read_meta\n"
            "changed = sorted(k for k in set(os.environ) | set(before) if os.environ.get(k) != before.get(k))\n"
            "print('CHANGED', changed)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUNE_", "RAY_"))}
    done = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "CHANGED []" in done.stdout, done.stdout


def test_tune_driven_through_its_public_api_only():
    source = Path(ray_runtime.__file__).read_text()
    assert "class_cache" not in source and "_ActorClassCache" not in source


SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    import psutil
    from ray import tune
    from orchestrator.search.ray_runtime import start_ray
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
def test_trials_get_tunes_variables_and_preloaded_modules(tmp_path):
    out = _run(tmp_path, "same")
    assert len(out["trials"]) == 2, out
    assert all(t["pl"] == "1" for t in out["trials"])  # Tune's own runtime environment
    assert all(t["preloaded"] for t in out["trials"])  # the worker imported the trial's modules before


def test_preload_is_on_by_default_and_off_with_s4op_preload_0(monkeypatch):
    monkeypatch.delenv("S4OP_PRELOAD", raising=False)
    config = ray_runtime.system_config(4)
    assert {"ray.tune", "torch", "workers.trial"} <= set(config["preload_python_modules"])
    assert config["num_workers_soft_limit"] == 4  # idle workers kept while a stage reserves its CPUs
    monkeypatch.setenv("S4OP_PRELOAD", "0")
    assert ray_runtime.system_config(4) == {"num_workers_soft_limit": 4}


@pytest.mark.timeout(300)
def test_a_variable_set_after_ray_init_still_reaches_the_trials(tmp_path):
    out = _run(tmp_path, "changed")
    assert all(t["aws"] == "set-after-ray-init" and t["pl"] == "1" for t in out["trials"]), out
