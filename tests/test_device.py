"""Trials on their GPU share: the device choice, mixed precision, token checks at the data boundary."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from search_spaces.config import load_search_config
from search_spaces.errors import ConfigError, DataError
from tests.test_training import FIT, Split, tiny_model, toy_splits
from workers.batches import eval_batches, make_batch
from workers.device import DeviceError, assigned_device, device_label, local_device, trial_device
from workers.training import evaluate, fit

pytestmark = pytest.mark.usefixtures("one_thread")
CUDA = dict(cuda_available=True, device_count=2, node="gpu-node-1")


# ------------------------------------------------------------------------------- the device choice
def test_a_trial_without_gpu_request_trains_on_cpu_whatever_ray_assigned():
    assert trial_device(0.0, [], cuda_available=False, device_count=0, visible_devices=None, node="n") == "cpu"
    assert trial_device(0.0, ["1"], visible_devices="1", **CUDA) == "cpu"


def test_the_assigned_gpu_is_its_position_among_the_visible_devices():
    assert trial_device(0.5, ["3"], visible_devices="3", **CUDA) == "cuda:0"  # Ray's usual: one visible GPU
    assert trial_device(1.0, ["3"], visible_devices="2,3", **CUDA) == "cuda:1"
    assert trial_device(0.25, [1], visible_devices=None, **CUDA) == "cuda:1"  # Ray left the variable unset
    assert trial_device(2.0, ["0", "1"], visible_devices="0,1", **CUDA) == "cuda:0"


def test_a_node_whose_torch_has_no_cuda_is_named_in_one_line():
    with pytest.raises(DeviceError, match=r"^node cpu-box-7: Ray assigned GPU 0 .*resources.gpu=0.5.* no CUDA") as err:
        trial_device(0.5, ["0"], cuda_available=False, device_count=0, visible_devices="0", node="cpu-box-7")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("ids, visible, count, match", [
    ([], "0", 2, r"node gpu-node-1: resources.gpu=1 but Ray assigned this trial no GPU"),
    (["5"], "0,1", 2, r"GPU 5 but CUDA_VISIBLE_DEVICES='0,1' does not list it"),
    (["3"], None, 2, r"GPU 3 \(cuda:3\) but torch sees 2 CUDA device"),
])
def test_inconsistent_assignments_are_device_errors(ids, visible, count, match):
    with pytest.raises(DeviceError, match=match):
        trial_device(1.0, ids, cuda_available=True, device_count=count, visible_devices=visible, node="gpu-node-1")


def test_logical_gpus_train_on_cpu_only_when_asked():
    args = dict(cuda_available=False, device_count=0, visible_devices="1", node="n")
    assert trial_device(0.5, ["1"], logical_gpus=True, **args) == "cpu"
    with pytest.raises(DeviceError):
        trial_device(0.5, ["1"], **args)


def test_device_label_is_the_ledger_string():
    assert device_label("cuda:0", "NVIDIA H100") == "cuda:0 (NVIDIA H100)"
    assert device_label("cpu") == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_the_ray_adapter_reads_the_assigned_ids(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "get_gpu_ids", lambda: ["1"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert assigned_device(0.0) == ("cpu", "cpu")
    with pytest.raises(DeviceError, match="Ray assigned GPU 1 .* no CUDA"):
        assigned_device(0.5)
    monkeypatch.setenv("S4OP_LOGICAL_GPUS", "1")
    assert assigned_device(0.5) == ("cpu", "cpu (logical GPU 1)")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_train_device_cuda_without_cuda_is_one_line_and_exit_2(tmp_path, capsys):
    from tests.test_train_cli import run_cli, write_config

    assert local_device("cpu") == "cpu"
    with pytest.raises(DeviceError, match=r"--device: got 'gpu', expected cpu, cuda or cuda:<index>"):
        local_device("gpu")
    config = write_config(tmp_path, tmp_path / "data")
    code, _, err = run_cli(["train", str(config), "--device", "cuda", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "--device" in err and "no CUDA" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------- mixed precision
def test_precision_defaults_to_fp32_and_refuses_other_names():
    cfg = load_search_config("cpu-listops-s4d", ["search.finetune.precision=bf16"])
    assert (cfg.baseline.train.precision, cfg.search.finetune.precision) == ("fp32", "bf16")
    with pytest.raises(ConfigError, match=r"baseline.train.precision='fp8' must be one of fp32, bf16, fp16"):
        load_search_config("cpu-listops-s4d", ["baseline.train.precision=fp8"])


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_fit_on_cpu_learns_with_finite_losses(precision):
    splits = toy_splits()
    result = fit(tiny_model(dropout=0.0), splits, **{**FIT, "epochs": 3, "lr": 0.02}, precision=precision)
    losses = [h.train_loss for h in result.history]
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]  # it trains, not just runs
    assert bool(result.state.scaler) == (precision == "fp16")  # the fp16 loss scale is part of the resumable state


def test_under_bf16_autocast_the_mixing_is_bf16_and_the_ssm_stays_fp32():
    model = tiny_model(dropout=0.0)
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen.setdefault(name, output.dtype)
        return hook

    model.blocks[0].conv.register_forward_hook(record("conv"))
    model.blocks[0].glu.register_forward_hook(record("glu"))
    x = torch.randint(1, 6, (4, 20))  # (B L)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)  # (B d_output)
    assert seen == {"conv": torch.float32, "glu": torch.bfloat16}
    assert torch.isfinite(logits.float()).all()


# ------------------------------------------------------------------------------- the data boundary
def _bad_splits():
    splits = toy_splits()
    x = splits.train.x.copy()
    x[7, 2] = 6  # vocabulary 0..5
    splits.train = Split(x, splits.train.lengths, splits.train.y)
    return splits


def test_bad_tokens_are_refused_where_batches_are_made():
    splits = _bad_splits()
    with pytest.raises(DataError, match=r"^data: token 6 in row 7 out of range, expected 0..5 \(model.d_input\)$"):
        fit(tiny_model(), splits, **FIT)
    with pytest.raises(DataError, match=r"token 6 in row 7"):
        evaluate(tiny_model(), splits.train, splits.info)
    x = np.ones((4, 5), dtype=np.int64)
    x[3, 4] = -1  # split row 3 is batch row 2 below
    with pytest.raises(DataError, match=r"token -1 in row 3 out of range"):
        make_batch(Split(x, np.full(4, 5), np.zeros(4, np.int64)), np.array([1, 2, 3, 0]), d_input=6)
    assert len(list(eval_batches(splits.train, 16))) == 6  # without a vocabulary nothing is checked


def test_the_model_forward_reads_no_token_value_back():
    model = tiny_model()
    x = torch.randint(1, 6, (2, 9))  # (B L)

    class NoReadBack(torch.Tensor):
        def __int__(self):
            raise AssertionError("forward read a tensor value back")

        __index__ = __bool__ = __float__ = __int__

        def item(self):
            raise AssertionError("forward read a tensor value back")

    with torch.no_grad():
        model(x.as_subclass(NoReadBack), torch.tensor([9, 5]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_cuda_training_step_never_synchronises():
    model = tiny_model(dropout=0.0).cuda().train()
    x = torch.randint(1, 6, (4, 32), device="cuda")  # (B L)
    lengths = torch.tensor([32, 20, 9, 32], device="cuda")  # (B)
    model(x, lengths).sum().backward()  # warm-up (cuFFT plans, allocator)
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(x, lengths).float().sum()  # (,)
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
