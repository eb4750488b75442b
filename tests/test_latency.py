"""measure_latency follows the latency protocol: eval, no autograd, fixed threads, warm-up, >= 30 runs."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

from search_spaces.errors import ConfigError
from workers.latency import measure_latency, percentile


class Probe(nn.Module):
    """Sleeps `ms` per call and records the conditions it was called under."""

    def __init__(self, ms: float = 0.0):
        super().__init__()
        self.ms = ms
        self.lin = nn.Linear(4, 2)
        self.calls: list[tuple[bool, bool, int]] = []

    def forward(self, x, lengths=None):
        self.calls.append((self.training, torch.is_inference_mode_enabled(), torch.get_num_threads()))
        if self.ms:
            time.sleep(self.ms / 1000)
        return self.lin(x.float().mean(1))


def example(batch=3, length=7):
    return torch.randn(batch, length, 4), torch.full((batch,), length)


def test_runs_warmup_plus_repeats_in_eval_inference_mode_with_fixed_threads():
    probe = Probe().train()
    before = torch.get_num_threads()
    target = 2 if before != 2 else 1
    result = measure_latency(probe, example(), repeats=31, warmup=4, threads=target)
    assert len(probe.calls) == 35
    assert all(call == (False, True, target) for call in probe.calls)
    assert torch.get_num_threads() == before  # restored
    assert (result["repeats"], result["threads"], result["batch"], result["length"]) == (31, target, 3, 7)
    assert result["device"] == "cpu"


def test_times_are_milliseconds_of_the_forward_and_ordered():
    probe, x = Probe(ms=3.0), example()
    result = measure_latency(probe, x, repeats=30, warmup=1)
    assert 3.0 <= result["min_ms"] <= result["p50_ms"] <= result["p90_ms"]  # a forward sleeps >= 3 ms
    assert result["min_ms"] <= result["mean_ms"]
    own = []  # the same forward timed here, in the same run: milliseconds, not microseconds or seconds
    with torch.inference_mode():
        for _ in range(30):
            t0 = time.perf_counter()
            probe(*x)
            own.append((time.perf_counter() - t0) * 1000)
    assert 0.5 < result["p50_ms"] / float(np.median(own)) < 2.0


def test_cpu_time_counts_work_not_waiting():
    """cpu_p50_ms is process CPU time: a forward that sleeps costs wall time but almost no CPU."""
    result = measure_latency(Probe(ms=5.0), example(), repeats=30, warmup=1)
    assert result["p50_ms"] >= 5.0
    assert result["cpu_p50_ms"] < 0.5 * result["p50_ms"]
    assert result["cpu_p50_ms"] <= result["cpu_p90_ms"]


def test_interleaved_measurement_gives_each_model_its_own_figures():
    from workers.latency import measure_latency_interleaved

    fast, slow = Probe(ms=1.0), Probe(ms=6.0)
    results = measure_latency_interleaved([(fast, example(batch=2)), (slow, example(batch=5))],
                                          repeats=30, warmup=2)
    assert len(fast.calls) == len(slow.calls) == 32
    assert results[1]["p50_ms"] > 2 * results[0]["p50_ms"]  # 6 ms vs 1 ms of sleep per forward
    assert (results[0]["batch"], results[1]["batch"]) == (2, 5)


def test_slower_model_measures_slower():
    fast = measure_latency(Probe(ms=1.0), example(), repeats=30, warmup=1)
    slow = measure_latency(Probe(ms=8.0), example(), repeats=30, warmup=1)
    assert slow["p50_ms"] > 2 * fast["p50_ms"]  # 8 ms vs 1 ms of sleep per forward


@pytest.mark.parametrize("repeats", [29, 0, 1.5, "30"])
def test_fewer_than_30_repeats_is_refused(repeats):
    with pytest.raises(ConfigError, match="latency.repeats"):
        measure_latency(Probe(), example(), repeats=repeats)


def test_bad_threads_device_and_example_are_refused():
    with pytest.raises(ConfigError, match="latency.threads"):
        measure_latency(Probe(), example(), threads=0)
    with pytest.raises(ConfigError, match="latency.device"):
        measure_latency(Probe(), example(), device="tpu")
    with pytest.raises(ConfigError, match="tuple"):
        measure_latency(Probe(), torch.zeros(2, 3))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a CPU-only node")
def test_cuda_on_a_cpu_node_is_one_clear_error():
    with pytest.raises(ConfigError, match="CUDA is not available"):
        measure_latency(Probe(), example(), device="cuda")


class Wide(nn.Module):
    """Enough GPU work that an unsynchronised timer would read almost nothing."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 4096), nn.ReLU(), nn.Linear(4096, 4096))

    def forward(self, x, lengths=None):
        return self.net(x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_latency_is_synchronised():
    result = measure_latency(Wide(), (torch.randn(4096, 4), None), device="cuda", repeats=30)
    assert result["device"].startswith("cuda") and result["p50_ms"] > 0.05


def test_percentile_matches_numpy_linear_interpolation():
    rng = np.random.default_rng(0)
    values = list(rng.random(37))
    for q in (0, 50, 90, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))
