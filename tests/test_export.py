"""Deployable forms (kernel-cached convolution, S4D step model) and `s4op export`."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from report_fixtures import write_real_search
from support import tiny_model

from orchestrator.cli import main
from orchestrator.reports.export import export_search
from search_spaces.errors import CheckpointError, ConfigError, SearchStateError
from workers import export as ex
from workers.models import ModelSpec, S4Model
from workers.pruning import compact, masked


def _model(bidirectional=False, bypass="identity", input_kind="tokens", pool="mean", prenorm=False):
    return tiny_model(0, [[0, 3, 5], [1, 2, 6, 7]], bypass, d_input=10 if input_kind == "tokens" else 3,
                      input_kind=input_kind, bidirectional=bidirectional, pool=pool, prenorm=prenorm,
                      norm="layer" if prenorm else "batch").eval()


@pytest.mark.parametrize("bidirectional,bypass,pool", [(False, "identity", "mean"), (True, "identity", "last"),
                                                       (False, "zero", "mean")])
def test_deployable_matches_the_model_and_holds_no_kernel_generator(bidirectional, bypass, pool):
    model = _model(bidirectional, bypass, pool=pool)
    module = ex.deployable(model, 48)
    x = ex.example_input(model, 3, 48)  # (B L)
    with torch.no_grad():
        np.testing.assert_allclose(module(x).numpy(), model(x).numpy(), atol=1e-6)
    assert not any(p.is_complex() for p in module.state_dict().values())
    assert not any("kernel.log_dt" in k for k in module.state_dict())


@pytest.mark.parametrize("L,disc,init,bypass", [(50, "zoh", "lin", "identity"), (64, "bilinear", "inv", "zero"),
                                                  (300, "zoh", "legs", "identity")])
def test_scan_form_equals_the_fft_convolution(L, disc, init, bypass):
    torch.manual_seed(2)
    spec = ModelSpec(kind="s4d", d_input=10, d_output=3, d_model=8, n_layers=2, d_state=16, disc=disc, init=init)
    model = compact(S4Model(spec, bypass=bypass).eval(), [[0, 3, 5], list(range(8))], bypass=bypass)
    u = torch.randn(2, 8, L)  # (B H L)
    x = ex.example_input(model, 2, L)
    with torch.no_grad():
        for block in model.blocks:  # several chunks, a partial last chunk, and the state steps between them
            eager = block.conv(u)  # (B H L) kept-first (identity bypass) or (B H_kept L) (zero)
            if bypass == "identity":  # the frozen layer keeps the original channel order
                eager = eager[:, torch.argsort(block.conv.order)]  # (B H L)
            frozen = ex.ScanSSMConv(block.conv, L, T=16)(u)
            torch.testing.assert_close(frozen, eager, atol=1e-4, rtol=1e-4)
            if bypass == "identity":
                torch.testing.assert_close(frozen[:, block.conv.pruned], u[:, block.conv.pruned], atol=0, rtol=0)
        np.testing.assert_allclose(ex.deployable(model, L, "scan")(x).numpy(), model(x).numpy(), atol=1e-5)


def test_a_layer_holding_few_channels_takes_longer_chunks_and_still_equals_the_model():
    # one kept channel -> 256-step chunks, 2-4 -> 128, more -> 64 (fewer state updates where per-node
    # overhead is all there is); L 600 gives a partial last chunk in each
    torch.manual_seed(3)
    spec = ModelSpec(kind="s4d", d_input=10, d_output=3, d_model=12, n_layers=3, d_state=16)
    model = compact(S4Model(spec).eval(), [[4], [0, 3, 5, 9], list(range(12))], bypass="identity")
    module = ex.deployable(model, 600, "scan")
    assert [block.conv.T for block in module.model.blocks] == [256, 128, 64]
    assert [block.conv.C for block in module.model.blocks] == [3, 5, 10]
    x = ex.example_input(model, 1, 600)
    with torch.no_grad():
        np.testing.assert_allclose(module(x).numpy(), model(x).numpy(), atol=1e-5)


def test_auto_form_is_scan_only_for_unidirectional_s4d():
    assert ex.deployable(_model(), 16, "auto").form == "scan"
    assert ex.deployable(_model(bidirectional=True), 16, "auto").form == "fft"
    with pytest.raises(ConfigError, match="unidirectional"):
        ex.deployable(_model(bidirectional=True), 16, "scan")


def test_deployable_of_a_masked_reference_equals_its_compaction():
    torch.manual_seed(1)
    spec = ModelSpec(kind="s4d", d_input=10, d_output=3, d_model=8, n_layers=2, d_state=4)
    dense = S4Model(spec).eval()
    kept = [[0, 1, 4], [2, 3]]
    x = ex.example_input(dense, 2, 32)
    with torch.no_grad():
        np.testing.assert_allclose(ex.deployable(masked(dense, kept), 32)(x).numpy(),
                                   compact(dense, kept)(x).numpy(), atol=1e-6)


@pytest.mark.parametrize("pool,prenorm", [("mean", False), ("last", True)])
def test_streaming_over_a_whole_sequence_equals_the_convolution(pool, prenorm):
    model = _model(pool=pool, prenorm=prenorm)
    module = ex.streaming(model)
    L = 24
    x = ex.example_input(model, 2, L)  # (B L)
    state = module.initial_state(2)
    with torch.no_grad():
        for t in range(L):
            logits, *state = module(x[:, t], *state)
        expected = model(x)  # (B d_output)
    np.testing.assert_allclose(logits.numpy(), expected.numpy(), atol=1e-4)


def test_streaming_refuses_a_bidirectional_model():
    with pytest.raises(ConfigError, match="unidirectional"):
        ex.streaming(_model(bidirectional=True))


@pytest.mark.parametrize("fmt", ex.FORMATS)
def test_each_format_round_trips_within_tolerance(tmp_path, fmt):
    torch.set_num_threads(1)
    model = _model(input_kind="real")
    module = ex.deployable(model, 40, "auto")
    inputs = ex.module_inputs(module, model, 2, 40)
    path = ex.write_export(module, inputs, fmt, tmp_path / f"m.{fmt}", ex.describe(model, module))
    assert ex.max_abs_diff(path, fmt, model, module, inputs) <= 1e-4


@pytest.mark.parametrize("bypass", ["zero", "identity"])
def test_safetensors_export_rebuilds_from_the_file_alone(tmp_path, bypass):
    model = _model(bypass=bypass)
    for module in (ex.deployable(model, 24), ex.deployable(model, 24, "scan"), ex.streaming(model)):
        inputs = ex.module_inputs(module, model, 2, 24)
        path = ex.write_export(module, inputs, "safetensors", tmp_path / "m.safetensors", ex.describe(model, module))
        loaded = ex.load_safetensors_export(path)
        with torch.no_grad():
            got, want = loaded(*inputs), module(*inputs)
            if not isinstance(module, ex.Streaming):
                torch.testing.assert_close(got, model(*inputs), atol=1e-5, rtol=1e-5)
        for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
            torch.testing.assert_close(g, w)
    from safetensors.torch import save_file

    module = ex.deployable(model, 24, "scan")
    meta = {k: v for k, v in ex.describe(model, module).items() if k != "channel_order"}  # as the previous version
    state = {("pruned" if k.endswith(".kept") else k): v for k, v in module.state_dict().items()}  # other buffers
    save_file(state, str(tmp_path / "old.safetensors"), metadata={"s4op": json.dumps(meta)})
    with pytest.raises(ConfigError, match="older s4op .* export the model again"):  # refused, not loaded wrong
        ex.load_safetensors_export(tmp_path / "old.safetensors")

    save_file({"a": torch.zeros(1)}, str(tmp_path / "bare.safetensors"))
    with pytest.raises(ConfigError, match="s4op metadata"):
        ex.load_safetensors_export(tmp_path / "bare.safetensors")


@pytest.mark.parametrize("bypass,prenorm", [("identity", False), ("zero", False), ("identity", True)])
def test_scan_form_at_batch_1_is_the_model_in_the_ops_onnx_runtime_runs_fast(tmp_path, bypass, prenorm):
    # ONNX Runtime's cost (benchmarks/RESULTS.md, issue 18): per-mode multipliers broadcast over chunks, Pad
    # when L is a multiple of the chunk, the GLU's Split; at batch 1 the mixing is two Gemms per block
    model = _model(bypass=bypass, prenorm=prenorm)
    module = ex.deployable(model, 64, "scan")
    x = ex.example_input(model, 1, 64)  # (1 L)
    with torch.no_grad():
        np.testing.assert_allclose(module(x).numpy(), model(x).numpy(), atol=1e-5)
    path = ex.write_export(module, (x,), "onnx", tmp_path / "m.onnx", {})
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert "Split" not in ops and "Pad" not in ops and "DFT" not in ops
    assert ops.count("Gemm") == 2 * len(model.blocks) + 1  # GLU halves per block, decoder
    # identity bypass: the kept rows scattered into u once per pruned layer, no Gather + Concat of the pruned rows
    pruned_layers = sum(len(b.conv.kept) < b.conv.channels for b in model.blocks)
    assert ops.count("ScatterND") == (pruned_layers if bypass == "identity" else 0) == (2 if bypass == "identity" else 0)
    assert "Concat" not in ops
    assert ex.max_abs_diff(path, "onnx", model, module, (x,)) <= 1e-4


@pytest.mark.parametrize("form", ["fft", "scan"])
def test_onnx_graph_has_no_complex_tensors(tmp_path, form):
    model = _model()
    module = ex.deployable(model, 32, form)
    inputs = ex.module_inputs(module, model, 1, 32)
    path = ex.write_export(module, inputs, "onnx", tmp_path / "m.onnx", {"rate": 0.5})
    proto = onnx.load(str(path))
    ops = {node.op_type for node in proto.graph.node}
    assert ("DFT" in ops) == (form == "fft")
    assert ex.max_abs_diff(path, "onnx", model, module, inputs) <= 1e-4
    complex_types = {onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128}
    assert not any(init.data_type in complex_types for init in proto.graph.initializer)
    assert json.loads({p.key: p.value for p in proto.metadata_props}["s4op"])["rate"] == 0.5


# ---- s4op export ------------------------------------------------------------------------------

def test_export_onnx_from_a_search_checks_and_times(tmp_path):
    models = write_real_search(tmp_path / "s", rates=(0.5, 0.9), length=32)
    record = export_search(tmp_path / "s", 0.9, "onnx", tmp_path / "m.onnx", batch=2, repeats=30, warmup=1)
    assert record["stage"] == 2 and record["length"] == 32 and record["batch"] == 2
    assert record["max_abs_diff"] <= 1e-4
    assert record["latency"]["onnx"]["repeats"] == 30 and record["latency"]["onnx"]["p50_ms"] > 0
    assert record["latency"]["pytorch_eager"]["p50_ms"] > 0
    assert json.loads((tmp_path / "m.onnx.json").read_text())["checkpoint_sha256"] == record["checkpoint_sha256"]
    # the exported file really is the 90 % model
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    x = ex.example_input(models[2], 2, 32, seed=5)
    with torch.no_grad():
        expected = models[2](x).numpy()
    np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], expected, atol=1e-4)


def test_export_streaming_torchscript_steps_like_the_model(tmp_path):
    models = write_real_search(tmp_path / "s", rates=(0.5,), length=16)
    record = export_search(tmp_path / "s", 50, "torchscript", tmp_path / "step.pt", streaming=True,
                           repeats=30, warmup=1)
    assert record["streaming"] and record["max_abs_diff"] <= 1e-4
    step = torch.jit.load(str(tmp_path / "step.pt"))
    model = models[1]
    x = ex.example_input(model, 1, 10)
    state = ex.streaming(model).initial_state(1)
    reference = model.default_state(1)
    with torch.no_grad():
        for t in range(10):
            logits, *state = step(x[:, t], *state)
            expected, reference = model.step(x[:, t], reference)
    np.testing.assert_allclose(logits.numpy(), expected.numpy(), atol=1e-5)


def _cli(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
        raise SystemExit(0)
    return info.value.code, capsys.readouterr().err


def test_export_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, err = _cli(["export", str(tmp_path / "empty"), "--rate", "0.5", "--out", str(tmp_path / "x.onnx")], capsys)
    assert code == 2 and err.count("\n") == 1 and "no ledger" in err

    write_real_search(tmp_path / "s", rates=(0.5,))
    code, err = _cli(["export", str(tmp_path / "s"), "--rate", "0.7", "--out", str(tmp_path / "x.onnx")], capsys)
    assert code == 2 and err.count("\n") == 1 and "--rate 0.7" in err and "0.5" in err

    weights = tmp_path / "s" / "stages" / "stage-1" / "best" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    code, err = _cli(["export", str(tmp_path / "s"), "--rate", "0.5", "--format", "safetensors",
                      "--out", str(tmp_path / "x.safetensors")], capsys)
    assert code == 2 and err.count("\n") == 1 and "sha256" in err and "stage-1" in err
    assert not (tmp_path / "x.safetensors").exists()


def test_export_errors_are_typed(tmp_path):
    write_real_search(tmp_path / "s", rates=(0.5,))
    with pytest.raises(ConfigError, match="format"):
        export_search(tmp_path / "s", 0.5, "tflite", tmp_path / "x")
    write_real_search(tmp_path / "b", rates=(0.5,), bidirectional=True)
    with pytest.raises(ConfigError, match="unidirectional"):
        export_search(tmp_path / "b", 0.5, "onnx", tmp_path / "x.onnx", streaming=True)
    (tmp_path / "s" / "stages" / "stage-1" / "best" / "model.json").unlink()
    with pytest.raises(CheckpointError, match="model.json"):
        export_search(tmp_path / "s", 0.5, "onnx", tmp_path / "x.onnx")
    with pytest.raises(SearchStateError, match="not found"):
        export_search(tmp_path / "nothing-here", 0.5, "onnx", tmp_path / "x.onnx")
