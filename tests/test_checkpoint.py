"""Checkpoints: safetensors + JSON round trip, atomic files, clear errors, never unpickles."""

import json
import pickle

import pytest
import torch

from support import tiny_model

from search_spaces.errors import CheckpointError
from workers.checkpoint import checkpoint_sha256, load_checkpoint, save_checkpoint
from workers.models import ModelSpec, S4Model
from workers.optim import build_optimizer
from workers.pruning import compact, count_parameters, kept_channels, masked

KEPT = [[1, 3], [0, 1, 2, 3, 4, 5], [5]]


def _model(bypass="zero"):
    model = tiny_model(0, d_input=6, d_model=6, n_layers=3, trainable_B=True)
    model.train()
    model(torch.randint(1, 6, (4, 12)))  # BatchNorm running statistics are part of the checkpoint
    return compact(model, KEPT, bypass).eval()


@pytest.mark.parametrize("bypass", ["identity", "zero"])
def test_round_trip_rebuilds_compacted_model(tmp_path, bypass, monkeypatch):
    model = _model(bypass)
    folder = save_checkpoint(model, tmp_path / "ckpt", task="listops", data_fingerprint="abc",
                             metrics={"val_metric": 0.5}, extra={"stage": 2})
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.safetensors"]  # no temp files left

    def no_unpickling(*args, **kwargs):
        raise AssertionError("checkpoint loading must never unpickle")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(torch, "load", no_unpickling)
    loaded, meta = load_checkpoint(folder)
    x = torch.randint(1, 6, (2, 10))
    assert torch.equal(loaded(x), model(x))
    assert not loaded.training
    assert kept_channels(loaded) == KEPT and loaded.bypass == bypass
    assert count_parameters(loaded) == count_parameters(model) == meta["params"]
    assert meta["task"] == "listops" and meta["data_fingerprint"] == "abc"
    assert meta["metrics"] == {"val_metric": 0.5} and meta["extra"] == {"stage": 2}
    assert meta["spec"] == model.spec.to_dict() and meta["kept"] == KEPT
    groups = build_optimizer(loaded, 0.01, 0.1).param_groups
    assert any(g["weight_decay"] == 0.0 and g["lr"] == 0.001 for g in groups)  # SSM tags rebuilt


def test_format_1_checkpoint_with_original_column_order_loads_to_the_same_model(tmp_path):
    """Format 1 stored the identity-bypass mixing columns in original channel order; format 2 stores
    them kept-first. A format-1 folder must load to a model with the same outputs."""
    from safetensors.torch import load_file, save_file

    model = _model("identity")
    folder = save_checkpoint(model, tmp_path / "ckpt")
    tensors = load_file(str(folder / "model.safetensors"))
    for i, block in enumerate(model.blocks):
        if not block.conv.dense:  # back to original order: column h holds channel h
            order = block.conv.order
            w = tensors[f"blocks.{i}.mix.weight"]  # (2H H) kept-first
            original = torch.empty_like(w)
            original[:, order] = w
            tensors[f"blocks.{i}.mix.weight"] = original
            assert not torch.equal(original, w)
    save_file(tensors, str(folder / "model.safetensors"))
    meta = json.loads((folder / "model.json").read_text())
    assert meta["format_version"] == 2
    meta["format_version"] = 1
    (folder / "model.json").write_text(json.dumps(meta))
    loaded, _ = load_checkpoint(folder)
    x = torch.randint(1, 6, (2, 10))
    assert torch.allclose(loaded(x), model(x), atol=1e-6)
    meta["format_version"] = 3
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"format_version 3, expected one of 1, 2"):
        load_checkpoint(folder)


def test_masked_model_is_saved_compacted(tmp_path):
    torch.manual_seed(1)
    model = S4Model(ModelSpec(d_input=6, d_output=3, d_model=6, n_layers=3, d_state=4)).eval()
    reference = masked(model, KEPT, "identity")
    loaded, meta = load_checkpoint(save_checkpoint(reference, tmp_path))
    x = torch.randint(1, 6, (2, 10))
    assert torch.allclose(loaded(x), reference(x), atol=1e-5)
    assert meta["kept"] == KEPT and count_parameters(loaded) < count_parameters(model)


def test_sha256_covers_both_files(tmp_path):
    model = _model()
    a = checkpoint_sha256(save_checkpoint(model, tmp_path / "a", metrics={"m": 1.0}))
    b = checkpoint_sha256(save_checkpoint(model, tmp_path / "b", metrics={"m": 1.0}))
    c = checkpoint_sha256(save_checkpoint(model, tmp_path / "c", metrics={"m": 2.0}))
    assert a == b != c
    with torch.no_grad():
        model.decoder.bias.add_(1.0)
    assert checkpoint_sha256(save_checkpoint(model, tmp_path / "d", metrics={"m": 1.0})) != a


def test_truncated_weights(tmp_path):
    folder = save_checkpoint(_model(), tmp_path)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: unreadable or truncated"):
        load_checkpoint(folder)


@pytest.mark.parametrize("name", ["model.json", "model.safetensors"])
def test_missing_file(tmp_path, name):
    folder = save_checkpoint(_model(), tmp_path)
    (folder / name).unlink()
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.") + ": missing"):
        load_checkpoint(folder)
    with pytest.raises(CheckpointError, match="missing"):
        checkpoint_sha256(folder)


def test_bad_json(tmp_path):
    folder = save_checkpoint(_model(), tmp_path)
    (folder / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"model\.json: not valid JSON"):
        load_checkpoint(folder)


def test_tensors_not_matching_architecture(tmp_path):
    folder = save_checkpoint(_model(), tmp_path)
    meta = json.loads((folder / "model.json").read_text())
    meta["spec"]["d_state"] = 8
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor .* has shape .* expected"):
        load_checkpoint(folder)
    meta["spec"]["d_state"] = 4
    meta["kept"][0] = [0, 4]  # same sizes, other channels
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="kept channels of layer 0 differ"):
        load_checkpoint(folder)
    meta["kept"][0] = [0, 9]
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"model\.json: bad architecture .*index 9 out of range"):
        load_checkpoint(folder)


def test_tensors_from_another_model(tmp_path):
    folder = save_checkpoint(_model(), tmp_path / "a")
    other = save_checkpoint(S4Model(ModelSpec(d_input=6, d_output=3, d_model=6, n_layers=2, d_state=4)), tmp_path / "b")
    (folder / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match=r"model\.safetensors: does not match the architecture"):
        load_checkpoint(folder)
