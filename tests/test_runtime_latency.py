"""Latency where the model will run (issue 18): the runtime (PyTorch eager or ONNX Runtime, checked
within 1e-4 first), per-step figures of the streaming form, the node's facts, the missing-resource
check, and the config keys, ledger columns and report column they come with."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from orchestrator.search import ledger
from search_spaces.config import SearchConfig
from search_spaces.errors import ConfigError, LatencyError
from support import tiny_model
from workers import export as ex
from workers import runtime_latency as rl
from workers.latency_node import cpu_model, latency_node_cpus, missing_node_resources

PROTOCOL = {"repeats": 30, "warmup": 2, "threads": 1}


def _models():
    return [tiny_model(0).eval(), tiny_model(1, kept=[[0, 2, 5], [1, 3, 4, 7]]).eval()]


def _example(length=24, batch=1):
    x = torch.randint(1, 10, (batch, length), generator=torch.Generator().manual_seed(3))  # (B L) tokens
    return x, torch.full((batch,), length)


@pytest.fixture
def session_runs(monkeypatch):
    """Counts `run` calls of every ONNX Runtime session the latency code opens, per session."""
    counts: list[list[int]] = []
    real = ex.onnx_session

    class Counted:
        def __init__(self, session):
            self.session, self.n = session, [0]
            counts.append(self.n)

        def get_inputs(self):
            return self.session.get_inputs()

        def run(self, *args):
            self.n[0] += 1
            return self.session.run(*args)

    monkeypatch.setattr(ex, "onnx_session", lambda path, threads=1: Counted(real(path, threads)))
    return counts


# ---- the missing-resource check (pure) --------------------------------------------------------------

def test_missing_resource_is_one_line_naming_it_and_what_the_cluster_offers():
    offered = {"CPU": 4.0, "memory": 8e9, "object_store_memory": 2e9, "node:127.0.0.1": 1.0,
               "node:__internal_head__": 1.0, "jetson": 1.0}
    message = missing_node_resources({"edge-rpi4": 1}, offered)
    assert message is not None and "\n" not in message
    assert message.startswith("latency.node_resources: no Ray node offers {edge-rpi4: 1}")
    assert "(the cluster offers {CPU: 4, jetson: 1})" in message  # Ray's internal resources left out
    assert missing_node_resources({"jetson": 1}, offered) is None
    assert "jetson: 2" in missing_node_resources({"jetson": 2}, offered)  # not enough of it
    assert missing_node_resources({}, {}) is None


def test_latency_task_reserves_every_cpu_of_the_node_offering_the_resource():
    nodes = [{"Alive": True, "Resources": {"CPU": 8.0}}, {"Alive": True, "Resources": {"CPU": 4.0, "edge": 1.0}},
             {"Alive": False, "Resources": {"CPU": 2.0, "edge": 1.0}}]
    assert latency_node_cpus(nodes, {"edge": 1}) == 4  # the device's, not the biggest node's
    assert latency_node_cpus(nodes, {}) == 8  # no device asked: the largest node
    assert latency_node_cpus([{"Alive": True, "Resources": {"edge": 1.0}}], {"edge": 1}) == 0  # --num-cpus 0


def test_cpu_model_reads_x86_and_raspberry_pi_cpuinfo():
    assert cpu_model("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n") == "AMD EPYC 7B13"
    pi = "processor\t: 0\nBogoMIPS\t: 108.00\nCPU part\t: 0xd08\n\nHardware\t: BCM2835\nModel\t: Raspberry Pi 4 Model B Rev 1.4\n"
    assert cpu_model(pi) == "Raspberry Pi 4 Model B Rev 1.4"
    assert cpu_model("processor : 0\n", fallback="aarch64") == "aarch64"


# ---- runtime: onnxruntime -------------------------------------------------------------------------

def test_onnxruntime_figures_come_from_an_ort_session_matching_pytorch(session_runs):
    import onnxruntime

    figures = rl.measure_in_runtime(_models(), _example(), {"runtime": "onnxruntime", **PROTOCOL})
    assert len(session_runs) == 2  # one session per model
    assert all(n == [1 + 2 + 30] for n in session_runs)  # the 1e-4 check, warm-up, timed runs
    for fig in figures:
        assert fig["runtime"] == "onnxruntime" and fig["runtime_version"] == f"onnxruntime {onnxruntime.__version__}"
        assert fig["onnx_form"] == "scan"  # what `s4op export` picks for unidirectional S4D
        assert 0.0 <= fig["onnx_max_abs_diff"] <= 1e-4
        assert fig["p50_ms"] > 0 and fig["p90_ms"] >= fig["p50_ms"] and fig["repeats"] == 30
        assert (fig["batch"], fig["length"], fig["threads"], fig["mode"]) == (1, 24, 1, "sequence")
        assert fig["node_hostname"] and fig["node_arch"] and "step_p50_ms" not in fig


def test_an_export_that_disagrees_with_pytorch_is_refused_before_timing(monkeypatch, session_runs):
    real = ex.deployable

    def off_by_1e3(model, L, form="fft"):
        module = real(model, L, form)
        with torch.no_grad():
            module.model.decoder.bias += 1e-3  # the exported graph now computes something else
        return module

    monkeypatch.setattr(ex, "deployable", off_by_1e3)
    with pytest.raises(LatencyError) as err:
        rl.measure_in_runtime(_models()[:1], _example(), {"runtime": "onnxruntime", **PROTOCOL})
    message = str(err.value)
    assert "differs from PyTorch by 0.001" in message and "> 0.0001" in message and "\n" not in message
    assert session_runs == [[1]]  # checked once, never timed


def test_torch_runtime_records_torch_and_its_version():
    figures = rl.measure_in_runtime(_models(), _example(), {"runtime": "torch", **PROTOCOL})
    assert [f["runtime_version"] for f in figures] == [f"torch {torch.__version__}"] * 2
    assert all("onnx_form" not in f for f in figures)


# ---- mode: step -----------------------------------------------------------------------------------

def test_the_stepper_feeds_the_state_back_one_sample_at_a_time():
    model = _models()[1]
    x, _ = _example(length=24)
    with torch.inference_mode():
        stepper = rl.torch_stepper(ex.streaming(model), x)
        logits = [stepper() for _ in range(24)][-1]  # after L steps: mean over all L positions
        expected = model(x)  # (B d_output)
    assert torch.allclose(logits, expected, atol=1e-4)


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_step_mode_gives_per_step_figures_from_the_streaming_model(runtime, monkeypatch, session_runs):
    steps: list[int] = []
    real = ex.streaming

    def counted(model):
        module = real(model)
        steps.append(0)
        index = len(steps) - 1
        module.register_forward_hook(lambda *_: steps.__setitem__(index, steps[index] + 1))
        return module

    monkeypatch.setattr(ex, "streaming", counted)
    figures = rl.measure_in_runtime(_models(), _example(), {"runtime": runtime, "mode": "step", **PROTOCOL})
    for fig in figures:
        assert fig["mode"] == "step" and fig["runtime"] == runtime
        assert 0 < fig["step_p50_ms"] <= fig["step_p90_ms"] and fig["p50_ms"] > 0  # beside the sequence figure
    if runtime == "torch":
        assert steps == [2 + 30, 2 + 30]  # warm-up and timed steps, each one sample through the step model
    else:  # sequence sessions (check + timing), then step sessions: 8 checked steps, warm-up, timed steps
        assert [n[0] for n in session_runs] == [33, 33, rl.CHECK_STEPS + 32, rl.CHECK_STEPS + 32]
        assert all(0.0 <= f["step_onnx_max_abs_diff"] <= 1e-4 for f in figures)
        # the eager step only as the check's reference (and one trace by the exporter): timing ran in ORT
        assert all(rl.CHECK_STEPS <= n <= rl.CHECK_STEPS + 1 for n in steps) and len(steps) == 2


# ---- config, ledger, report -----------------------------------------------------------------------

_BASE = {"name": "x", "task": {"name": "listops", "data_dir": "/tmp"}}


@pytest.mark.parametrize("latency, model, expected", [
    ({"runtime": "onnxruntime", "device": "cuda"}, {}, "latency.runtime=onnxruntime is measured on the CPU"),
    ({"mode": "step"}, {"kind": "s4"}, "latency.mode=step times the streaming form of a unidirectional s4d"),
    ({"mode": "step"}, {"bidirectional": True}, "bidirectional=True"),
    ({"node_resources": {"edge": 0}}, {}, "latency.node_resources.edge=0 must be greater than 0"),
    ({"node_resources": {"CPU": 1}}, {}, "resource name 'CPU'"),
    ({"runtime": "tvm"}, {}, "latency.runtime='tvm' must be one of torch, onnxruntime"),
])
def test_bad_latency_config_is_one_line_naming_the_key(latency, model, expected):
    with pytest.raises(ConfigError) as err:
        SearchConfig.from_dict({**_BASE, "latency": latency, "model": model})
    assert expected in str(err.value)


def test_latency_defaults_keep_todays_behaviour():
    lat = SearchConfig.from_dict(_BASE).latency
    assert (lat.runtime, lat.mode, lat.node_resources) == ("torch", "sequence", {})


def test_ledger_rows_carry_the_runtime_and_the_node(tmp_path):
    figure = {"p50_ms": 2.0, "p90_ms": 3.0, "batch": 1, "threads": 1, "length": 24, "device": "cpu",
              "runtime": "onnxruntime", "runtime_version": "onnxruntime 1.32.0", "mode": "step", "step_p50_ms": 0.1,
              "step_p90_ms": 0.2, "node_hostname": "rpi4", "node_cpu": "Cortex-A72", "node_arch": "aarch64",
              "node_id": "abc"}
    ledger.write_trials(tmp_path, [{"stage": 1, "trial_id": "seed-7", **ledger.latency_columns(figure)}])
    row = ledger.trial_rows(tmp_path)[0]
    assert (row.latency_runtime, row.latency_runtime_version, row.latency_mode) == ("onnxruntime", "onnxruntime 1.32.0",
                                                                                   "step")
    assert (row.latency_node_hostname, row.latency_node_cpu, row.latency_node_arch, row.latency_node_id) == (
        "rpi4", "Cortex-A72", "aarch64", "abc")
    assert (row.latency_step_p50_ms, row.latency_step_p90_ms, row.latency_p50_ms) == (0.1, 0.2, 2.0)
    ledger.write_stage(tmp_path, {"stage": 0, "status": "completed", **ledger.latency_columns(figure, ledger.StageRow)})
    stage = ledger.stage_rows(tmp_path)[0]
    assert (stage.latency_runtime, stage.latency_step_p50_ms, stage.latency_node_cpu) == ("onnxruntime", 0.1, "Cortex-A72")


def test_report_shows_step_latency_beside_sequence_latency_only_when_present(tmp_path):
    from orchestrator.reports.table import display_table, load_search, table_ii
    from report_fixtures import write_search

    write_search(tmp_path, rates=(0.5,))
    plain = display_table(table_ii(load_search(tmp_path)))
    assert "step latency ms" not in plain.columns
    stages = ledger.read_stages(tmp_path)
    for stage, step in ((0, 0.25), (1, 0.125)):
        row = {**stages[stages["stage"] == stage].iloc[0].to_dict(), "latency_step_p50_ms": step,
               "latency_runtime": "onnxruntime"}
        ledger.write_stage(tmp_path, row)
    table = table_ii(load_search(tmp_path))
    assert table["latency_step_ms"].tolist() == [0.25, 0.125] and set(table["latency_runtime"]) == {"onnxruntime"}
    shown = display_table(table)
    columns = list(shown.columns)
    assert columns[columns.index("latency ms (change)") + 1] == "step latency ms"
    assert shown["step latency ms"].tolist() == ["0.250", "0.125"]


def test_local_cluster_latency_node_name_is_checked(tmp_path):
    from cluster.local import latency_node_resources, start_local_cluster

    assert latency_node_resources("edge-rpi4") == [{"edge-rpi4": 1.0}] and latency_node_resources(None) == []
    with pytest.raises(ConfigError, match="--latency-node 'a b'"):
        start_local_cluster(1, state_path=tmp_path / "s.json", latency_node="a b")
    assert not (tmp_path / "s.json").exists()  # refused before anything started


def test_measuring_on_a_latency_node_without_ray_is_refused():
    import ray

    from orchestrator.search.stage_latency import measure_stage

    if ray.is_initialized():  # pragma: no cover - another test left Ray running
        pytest.skip("Ray is running in this process")
    with pytest.raises(ConfigError, match="needs a running Ray cluster"):
        measure_stage({"a": "/nowhere"}, {1: (np.zeros((1, 4)), np.full(1, 4))}, {"node_resources": {"edge": 1}})
