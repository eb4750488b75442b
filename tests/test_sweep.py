"""`s4op sweep`: the sweep file expanded into named searches with baseline keys (pure, fast), bad sweep
files refused in one line with nothing created, and a 2-search sweep end to end on one embedded Ray:
one baseline trained once and shared, killed mid-way, resumed (nothing finished re-run), status, report."""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.sweep.spec import baseline_key, expand_sweep, parse_sweep
from search_helpers import S4OP, env, s4op
from support import tiny_search_config, write_config


def _base(tmp: Path, **search) -> Path:
    return write_config(tmp / "base.yaml", tiny_search_config(tmp / "data", search={"rates": [0.5], "seeds": [7],
                                                                                     "finetune": {"epochs": 1},
                                                                                     **search}))


def _expand(tmp: Path, sweep: dict):
    return expand_sweep(parse_sweep(yaml.safe_dump(sweep), source="sweep.yaml"), source="sweep.yaml", relative_to=tmp)


def test_a_grid_expands_to_every_combination_named_by_its_values(tmp_path):
    _base(tmp_path)
    planned = _expand(tmp_path, {"name": "sw", "base": "base.yaml", "set": {"search.rates": [0.3, 0.6]},
                                 "grid": {"search.allocation.policy": ["depth-aware", "uniform"],
                                          "search.finetune.lr": [0.001, 0.01]}})
    assert [p.name for p in planned] == ["sw-depth-aware-0.001", "sw-depth-aware-0.01", "sw-uniform-0.001",
                                         "sw-uniform-0.01"]
    assert [(p.config.search.allocation.policy, p.config.search.finetune.lr) for p in planned] == [
        ("depth-aware", 0.001), ("depth-aware", 0.01), ("uniform", 0.001), ("uniform", 0.01)]
    assert all(p.config.search.rates == [0.3, 0.6] and p.config.name == p.name for p in planned)


def test_a_list_expands_in_order_with_its_names_or_positions_and_may_follow_a_grid(tmp_path):
    _base(tmp_path)
    planned = _expand(tmp_path, {"name": "sw", "base": "base.yaml", "grid": {"base": ["base.yaml"]},
                                 "searches": [{"name": "oneshot", "set": {"search.mode": "one-shot"}},
                                              {"set": {"model.d_model": 8}}]})
    assert [p.name for p in planned] == ["sw-base", "sw-oneshot", "sw-2"]  # a listed search without a name: its position in the list
    assert [p.config.search.mode for p in planned] == ["incremental", "one-shot", "incremental"]
    assert planned[2].config.model.d_model == 8


def test_baseline_keys_are_equal_exactly_when_task_data_model_and_baseline_training_are(tmp_path):
    _base(tmp_path)
    planned = _expand(tmp_path, {"name": "sw", "base": "base.yaml", "searches": [
        {"name": "a"}, {"name": "policy", "set": {"search.allocation.policy": "uniform", "search.finetune.lr": 0.01}},
        {"name": "width", "set": {"model.d_model": 8}}, {"name": "epochs", "set": {"baseline.train.epochs": 3}},
        {"name": "length", "set": {"task.max_len": 30}},
        {"name": "moved", "set": {"task.data_dir": str(tmp_path / "elsewhere")}},
        {"name": "given", "set": {"baseline.checkpoint": str(tmp_path / "ckpt")}},
        {"name": "gpu", "set": {"resources.gpu": 1}}, {"name": "gpus", "set": {"resources.gpu": 0.5}}]})
    keys = {p.name.split("-", 1)[1]: baseline_key(p.config, "fp") for p in planned}
    assert keys["policy"] == keys["a"] == keys["moved"]  # search settings and where the data lies do not count
    assert keys["gpu"] == keys["gpus"]  # trained on a GPU either way
    assert len({keys[k] for k in ("a", "width", "epochs", "length", "gpu")}) == 5
    assert baseline_key(planned[0].config, "other data") != keys["a"]
    assert keys["given"] is None  # its own checkpoint: nothing to train


BAD = [  # (sweep file, the key the one line must name)
    ({"name": "sw", "base": "base.yaml", "grid": {"search.allocation.policy": ["uniform", "nope"]}},
     "search.allocation.policy='nope'"),
    ({"name": "sw", "base": "base.yaml", "grid": {"search.rates": []}}, "grid.search.rates"),
    ({"name": "sw", "base": "base.yaml", "grids": {"search.rates": [[0.5]]}}, "'grids'"),
    ({"name": "sw", "base": "base.yaml"}, "grid and searches"),
    ({"name": "sw", "searches": [{"name": "a"}]}, "base"),
    ({"name": "sw", "base": "base.yaml", "searches": [{"name": "a"}, {"name": "a"}]}, "'sw-a'"),
    ({"name": "sw", "base": "base.yaml", "searches": [{"set": {"model.bogus": 1}}]}, "model.bogus"),
    ({"name": "sw", "base": "base.yaml", "max_parallel": 0, "searches": [{}]}, "max_parallel"),
    ({"name": "s w", "base": "base.yaml", "searches": [{}]}, "name"),
]


@pytest.mark.parametrize("sweep,key", BAD, ids=[k for _, k in BAD])
def test_a_bad_sweep_file_is_one_line_naming_the_key_exit_2_and_nothing_created(tmp_path, capsys, sweep, key):
    _base(tmp_path)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", str(path), "--storage", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and key in err, err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_the_same_sweep_file_continues_its_folder_and_a_changed_one_is_refused(tmp_path):
    from orchestrator.sweep.create import create_sweep
    from search_spaces.errors import SearchStateError

    _base(tmp_path)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "sw", "base": "base.yaml", "grid": {"search.mode": ["incremental",
                                                                                                "one-shot"]}}))
    said = []
    sweep_dir = create_sweep(path, storage=tmp_path / "runs", log=said.append)
    meta = json.loads((sweep_dir / "sweep.json").read_text())
    keys = {s["key"] for s in meta["searches"]}
    assert len(keys) == 1 and "1 baseline(s) to train" in said[0]
    config = yaml.safe_load((sweep_dir / "configs" / "sw-one-shot.yaml").read_text())
    assert config["baseline"]["checkpoint"] == str(sweep_dir / "baselines" / keys.pop() / "model")
    assert create_sweep(path, storage=tmp_path / "runs", log=said.append) == sweep_dir and "continuing" in said[-1]
    path.write_text(yaml.safe_dump({"name": "sw", "base": "base.yaml", "grid": {
        "search.mode": ["incremental", "one-shot"], "search.rates": [[0.1]]}}))
    with pytest.raises(SearchStateError, match="sw-incremental-0.1"):
        create_sweep(path, storage=tmp_path / "runs")
    path.write_text(yaml.safe_dump({"name": "sw", "base": "base.yaml", "set": {"search.seeds": [1]},
                                    "grid": {"search.mode": ["incremental", "one-shot"]}}))
    with pytest.raises(SearchStateError, match=r"search sw-incremental .*search.seeds"):
        create_sweep(path, storage=tmp_path / "runs")


@pytest.mark.parametrize("setting, added", [(None, 10), ("0", 0), ("5", 5)])
def test_a_sweeps_search_drivers_run_niced_so_trials_get_the_cores_first(tmp_path, monkeypatch, setting, added):
    import sys

    from orchestrator.sweep.create import create_sweep
    from orchestrator.sweep.run import SweepRunner

    _base(tmp_path)
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({"name": "sw", "base": "base.yaml", "searches": [{"name": "a"}]}))
    sweep_dir = create_sweep(tmp_path / "sweep.yaml", storage=tmp_path / "runs", log=lambda line: None)
    if setting is None:
        monkeypatch.delenv("S4OP_SWEEP_DRIVER_NICE", raising=False)
    else:
        monkeypatch.setenv("S4OP_SWEEP_DRIVER_NICE", setting)
    runner = SweepRunner(sweep_dir, "", log=lambda line: None)
    monkeypatch.setattr(runner, "command", lambda s: [sys.executable, "-c", "import os; print('nice', os.nice(0))"])
    search = runner.searches[0]
    runner.launch(search)  # the driver's real start: its own session, parent-death signal, niceness
    assert search.proc.wait(timeout=30) == 0
    assert f"nice {os.nice(0) + added}" in runner.folder.log_path(search.name).read_text()


def test_a_sweep_told_its_folder_is_shared_tells_its_search_drivers(tmp_path):
    from orchestrator.sweep.create import create_sweep
    from orchestrator.sweep.run import SweepRunner

    _base(tmp_path)
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({"name": "sw", "base": "base.yaml", "searches": [{"name": "a"}]}))
    sweep_dir = create_sweep(tmp_path / "sweep.yaml", storage=tmp_path / "runs", log=lambda line: None)
    shared = SweepRunner(sweep_dir, "10.0.0.1:6379", log=lambda line: None, allow_local_storage=True)
    plain = SweepRunner(sweep_dir, "10.0.0.1:6379", log=lambda line: None)
    assert shared.command(shared.searches[0])[-1] == "--allow-local-storage"
    assert "--allow-local-storage" not in plain.command(plain.searches[0])


@pytest.mark.parametrize("value", ["-1", "20", "ten"])
def test_a_bad_driver_niceness_is_one_line_naming_the_variable(value):
    from orchestrator.sweep.run import driver_nice
    from search_spaces.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"S4OP_SWEEP_DRIVER_NICE: got '{value}', expected a whole number 0..19"):
        driver_nice(value)


# ---- end to end --------------------------------------------------------------------------------------

def _stages_done(search_dir: Path) -> set[int]:
    from orchestrator.search import ledger

    if not ledger.stages_path(search_dir).exists():
        return set()
    return {r.stage for r in ledger.stage_rows(search_dir) if r.status == "completed"}


def _starts(search_dir: Path) -> dict[int, int]:
    return {int(p.parent.name.split("-")[1]): len(p.read_text().splitlines())
            for p in search_dir.glob("stages/stage-*/starts.log")}


@pytest.mark.slow
def test_a_sweep_shares_one_baseline_survives_a_kill_and_reports(tmp_path):
    _base(tmp_path, rates=[0.5])
    sweep = {"name": "sw", "base": "base.yaml", "set": {"baseline.train.epochs": 2},
             "searches": [{"name": "short"}, {"name": "long", "set": {"search.rates": [0.3, 0.6],
                                                                     "search.allocation.policy": "uniform",
                                                                     # still training when short is done,
                                                                     # however slow its stage 0 was
                                                                     "search.finetune.epochs": 12,
                                                                     "search.finetune.patience": 12}}]}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    sweep_dir = tmp_path / "runs" / "sw"
    short, long = sweep_dir / "searches" / "sw-short", sweep_dir / "searches" / "sw-long"
    with open(tmp_path / "first.log", "w") as out:
        proc = subprocess.Popen([*S4OP, "sweep", "sweep.yaml", "--storage", "runs"], cwd=tmp_path, env=env(),
                                stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    # kill once long's first rate stage is done (its second, 12 epochs, still to run); short is then
    # usually complete, but its latency task (the whole node) may still wait behind long's trials
    while time.monotonic() < deadline and proc.poll() is None and not _stages_done(long) >= {0, 1}:
        time.sleep(0.5)
    assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    import psutil

    tree = psutil.Process(proc.pid).children(recursive=True)  # search drivers, the embedded Ray and its workers
    os.kill(proc.pid, signal.SIGKILL)  # the sweep driver, mid-way: everything it started dies with it
    proc.wait()
    agents = [p for p in tree if "Agent" in p.name()]  # Ray's agents notice their raylet's end within ~90 s
    gone, alive = psutil.wait_procs([p for p in tree if p not in agents], timeout=30)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive
    first = (tmp_path / "first.log").read_text()
    drivers = {name: int(pid) for name, pid in re.findall(r"(sw-\w+): started \(driver PID (\d+)", first)}
    assert set(drivers) == {"sw-short", "sw-long"}, first[-3000:]
    children = {p.pid for p in tree}
    assert drivers["sw-long"] in children  # still running when the sweep died: its child, gone with it
    assert drivers["sw-short"] in children or _stages_done(short) == {0, 1}  # or it had already finished
    done_short, done_long = _stages_done(short), _stages_done(long)
    starts_short, starts_long = _starts(short), _starts(long)
    assert done_long < {0, 1, 2}, done_long
    key = json.loads((sweep_dir / "sweep.json").read_text())["searches"][0]["key"]
    epochs_log = sweep_dir / "baselines" / key / "train" / "epochs.log"
    trained = epochs_log.read_text()

    st = s4op("sweep", "status", sweep_dir, cwd=tmp_path)
    assert st.returncode == 0 and "stopped" in st.stdout, st.stdout
    assert ("sw-short  complete" in st.stdout) == (done_short == {0, 1}), st.stdout
    assert f"sweep resume {sweep_dir}" in st.stdout

    done = s4op("sweep", "resume", sweep_dir, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert _stages_done(short) == {0, 1} and _stages_done(long) == {0, 1, 2}
    if done_short == {0, 1}:
        assert "sw-short: complete, not started again" in done.stdout, done.stdout
        assert _starts(short) == starts_short  # the finished search untouched
    for search_dir, was_done, starts in ((short, done_short, starts_short), (long, done_long, starts_long)):
        assert all(_starts(search_dir)[k] == starts[k] for k in was_done if k > 0)  # finished stages not re-run
    # the baseline was trained once: one epochs.log (epochs 1, 2 from one process), one MLflow run
    assert epochs_log.read_text() == trained
    assert [json.loads(line)["epoch"] for line in trained.splitlines()] == [1, 2]
    assert len({json.loads(line)["pid"] for line in trained.splitlines()}) == 1
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{sweep_dir / 'baselines' / key / 'mlflow.db'}")
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == 1
    from orchestrator.search import ledger
    from workers.checkpoint import checkpoint_sha256

    shared = sweep_dir / "baselines" / key / "model"
    for search_dir in (short, long):  # each search's stage 0 is the shared checkpoint, recorded as its source
        stage0 = next(r for r in ledger.stage_rows(search_dir) if r.stage == 0)
        assert stage0.checkpoint_sha256 == checkpoint_sha256(shared)
        facts = json.loads((search_dir / "search.json").read_text())["facts"]
        assert facts["baseline_source"]["checkpoint"] == str(shared)
        assert not (search_dir / "baseline.train").exists()
        runs = MlflowClient(f"sqlite:///{search_dir / 'mlflow.db'}").search_runs(
            [MlflowClient(f"sqlite:///{search_dir / 'mlflow.db'}").get_experiment_by_name(search_dir.name).experiment_id])
        assert not [r for r in runs if r.data.tags.get("s4op.kind") == "baseline"]
        search_run = next(r for r in runs if r.data.tags.get("s4op.kind") == "search")
        assert search_run.data.tags["s4op.baseline_source"] == str(shared)

    gone, alive = psutil.wait_procs(agents, timeout=120)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive
    st = s4op("sweep", "status", sweep_dir, "--json", cwd=tmp_path)
    status = json.loads(st.stdout)
    assert status["complete"] and [s["state"] for s in status["searches"]] == ["complete", "complete"]
    assert status["baselines"] == [{"key": key, "trained": True, "epochs_done": 2, "searches": ["sw-short", "sw-long"],
                                    "checkpoint": str(shared)}]
    report = s4op("sweep", "report", sweep_dir, cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-2000:]
    rows = [line for line in report.stdout.splitlines() if line.startswith("| 0.")]
    assert [(r.split("|")[1].strip(), r.split("|")[2].strip()) for r in rows] == [
        ("0.3", "sw-long"), ("0.5", "sw-short"), ("0.6", "sw-long")]
    assert (sweep_dir / "report" / "report.html").is_file() and (sweep_dir / "report" / "table_ii_compare.csv").is_file()
