"""GPU packing on a CPU machine: an embedded Ray started with logical GPUs (`S4OP_NUM_GPUS=2`), trials asking
for `resources: {gpu: 0.5, cpu: 0.5}` and `S4OP_LOGICAL_GPUS=1` (a trial holding a logical GPU trains on the
CPU and says so). Four seeds run at once, two per logical GPU, read from the trials' own records (the start
and end marks of each trial's final Tune result), not from wall-clock sleeps. Without S4OP_NUM_GPUS Ray is
started as before (no `num_gpus` passed)."""

from __future__ import annotations

import json

import pytest

from orchestrator.search import ledger
from orchestrator.search.ray_runtime import embedded_gpus
from search_helpers import S4OP, tiny_config
from search_spaces.errors import ConfigError
from support import subprocess_env

SEEDS = (1, 2, 3, 4)


def test_s4op_num_gpus_is_a_whole_number_or_unset():
    assert embedded_gpus(None) is None and embedded_gpus(" ") is None  # the CPU path: Ray detects GPUs itself
    assert embedded_gpus("2") == 2 and embedded_gpus("0") == 0
    for bad in ("1.5", "two", "-1"):
        with pytest.raises(ConfigError, match=r"^S4OP_NUM_GPUS: got '"):
            embedded_gpus(bad)


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of (start, end) intervals that overlap at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def test_most_at_once_counts_overlaps():
    assert most_at_once([(0, 2), (1, 3), (2.5, 4)]) == 2
    assert most_at_once([(0, 1), (1, 2)]) == 1  # one ends as the next starts


@pytest.mark.slow
def test_half_gpu_trials_pack_four_on_two_logical_gpus(tmp_path):
    import subprocess

    cfg = tiny_config(tmp_path, tmp_path / "data", rates=(0.5,), seeds=SEEDS, epochs=12,
                      resources={"cpu": 0.5, "gpu": 0.5, "max_concurrent": 4})
    done = subprocess.run([*S4OP, "search", str(cfg), "--storage", str(tmp_path / "runs")], cwd=tmp_path,
                          env=subprocess_env(S4OP_NUM_GPUS="2", S4OP_LOGICAL_GPUS="1"), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    search_dir = tmp_path / "runs" / "tiny"
    finals = []
    for result in sorted((search_dir / "stages" / "stage-1").glob("*/result.json")):
        reports = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        finals.append(next(r for r in reversed(reports) if r.get("final")))
    assert sorted(f["seed"] for f in finals) == list(SEEDS)
    marks = [json.loads(f["timings"])["marks"] for f in finals]
    assert most_at_once([(m["entry"], m["saved"]) for m in marks]) == len(SEEDS)  # all four at once
    assert len({json.loads(f["timings"])["pid"] for f in finals}) == len(SEEDS)  # in four worker processes
    trials = ledger.read_trials(search_dir)
    devices = sorted(trials["train_device"])
    assert devices == ["cpu (logical GPU 0)"] * 2 + ["cpu (logical GPU 1)"] * 2, devices  # two per GPU
    baseline = json.loads((search_dir / "baseline" / "model.json").read_text())
    assert baseline["extra"]["train_device"].startswith("cpu (logical GPU ")  # the baseline held a share too

