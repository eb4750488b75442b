"""A trial resource no node can give (GPUs on a GPU-less cluster) is refused before any trial."""

import pytest

from orchestrator.search.ray_runtime import unmet_trial_resources
from search_helpers import s4op, tiny_config

CPU_NODE = {"Alive": True, "Resources": {"CPU": 2.0, "memory": 1e9}}
GPU_NODE = {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}}
DEAD_GPU_NODE = {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 4.0}}


def test_a_gpu_share_on_a_gpu_less_cluster_is_named_with_what_the_cluster_has():
    message = unmet_trial_resources(1.0, 0.5, [CPU_NODE, DEAD_GPU_NODE])
    assert message.startswith("resources.gpu=0.5: the Ray cluster has 0 GPUs") and "\n" not in message


def test_fractional_and_whole_gpu_shares_fit_a_one_gpu_node():
    assert unmet_trial_resources(1.0, 0.25, [CPU_NODE, GPU_NODE]) is None
    assert unmet_trial_resources(1.0, 1.0, [GPU_NODE]) is None
    assert unmet_trial_resources(1.0, 0.0, [CPU_NODE]) is None


def test_more_cpus_than_any_node_has_is_refused():
    assert unmet_trial_resources(4.0, 0.0, [CPU_NODE]).startswith("resources.cpu=4: no node")


@pytest.mark.slow
def test_search_asking_for_a_gpu_on_this_machine_exits_2_before_any_trial(tmp_path):
    config = tiny_config(tmp_path, tmp_path / "data", resources={"cpu": 1, "gpu": 0.5})
    proc = s4op("search", config, "--storage", tmp_path / "runs", "--name", "g", cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "s4op: error: resources.gpu=0.5: the Ray cluster has 0 GPUs" in proc.stderr
    assert not (tmp_path / "runs" / "g" / "ledger" / "stages.parquet").exists()
