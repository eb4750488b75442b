"""Safe defaults: what the project starts listens on 127.0.0.1 unless the user says otherwise."""

import pytest


@pytest.mark.slow
def test_embedded_ray_of_a_local_search_binds_loopback(monkeypatch):
    import ray

    from orchestrator import driver

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    handle = driver.start_ray("local", num_cpus=1)
    try:
        assert handle.started_here
        nodes = ray.nodes()
        assert nodes and all(n["NodeManagerAddress"] == "127.0.0.1" for n in nodes), nodes
        assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    finally:
        ray.shutdown()
        driver._RAY_STARTED_HERE = False

