"""Checkpoint fuzzing: truncated or garbled safetensors, tensors of the wrong dtype or shape, and
model.json with wrong types either load or raise `CheckpointError` (an `S4opError`), never another
exception; and loading never unpickles."""

import copy
import json
import pickle
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from support import tiny_model

from search_spaces.errors import S4opError
from workers.checkpoint import load_checkpoint, save_checkpoint

EXAMPLES = 40  # per test; FAULTS.md counts them


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    model = tiny_model(0, [[0, 2, 3, 5], [1, 2, 4]], d_input=6, d_model=6).eval()
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "good", task="listops")


def _load_or_checkpoint_error(folder: Path):
    try:
        model, meta = load_checkpoint(folder)
    except S4opError as exc:
        assert "\n" not in str(exc)
        return None
    out = model(torch.randint(1, 6, (1, 5)))  # a loaded model runs
    assert out.shape == (1, 3)
    return model


def _copy(good: Path, tmp: str) -> Path:
    folder = Path(tmp) / "c"
    shutil.copytree(good, folder)
    return folder


json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 40) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          derandomize=True)
@given(pick=st.integers(0, 10_000), value=json_value, delete=st.booleans())
def test_fuzz_model_json_with_wrong_types(good, pick, value, delete):
    meta = json.loads((good / "model.json").read_text())
    paths = [p for p in _paths(meta) if p]
    path = paths[pick % len(paths)]
    doc = copy.deepcopy(meta)
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    with tempfile.TemporaryDirectory() as tmp:
        folder = _copy(good, tmp)
        (folder / "model.json").write_text(json.dumps(doc))
        _load_or_checkpoint_error(folder)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          derandomize=True)
@given(which=st.sampled_from(["model.safetensors", "model.json"]),
       how=st.sampled_from(["truncate", "garble", "replace"]), at=st.floats(0, 1),
       junk=st.binary(min_size=1, max_size=64))
def test_fuzz_truncated_or_garbled_files(good, which, how, at, junk):
    with tempfile.TemporaryDirectory() as tmp:
        folder = _copy(good, tmp)
        path = folder / which
        data = path.read_bytes()
        cut = int(len(data) * at)
        path.write_bytes({"truncate": data[:cut], "garble": data[:cut] + junk + data[cut + len(junk):],
                          "replace": junk}[how])
        _load_or_checkpoint_error(folder)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          derandomize=True)
@given(pick=st.integers(0, 1000), dtype=st.sampled_from([torch.float16, torch.float64, torch.int8, torch.int64,
                                                         torch.bool, torch.bfloat16, torch.complex64]),
       shape=st.none() | st.lists(st.integers(0, 7), max_size=3), drop=st.booleans(), extra=st.booleans())
def test_fuzz_tensors_of_wrong_dtype_or_shape(good, pick, dtype, shape, drop, extra):
    tensors = load_file(str(good / "model.safetensors"))
    names = sorted(tensors)
    name = names[pick % len(names)]
    t = tensors[name]
    if drop:
        del tensors[name]
    else:
        new = torch.zeros(shape) if shape is not None else t
        tensors[name] = new.to(dtype) if dtype != torch.complex64 else torch.complex(new.float(), new.float())
    if extra:
        tensors["unexpected.weight"] = torch.zeros(2)
    with tempfile.TemporaryDirectory() as tmp:
        folder = _copy(good, tmp)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"))
        _load_or_checkpoint_error(folder)


def test_loading_never_unpickles(good, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint must load through safetensors and JSON only")

    for module, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)
    model = _load_or_checkpoint_error(good)
    assert model is not None
    with tempfile.TemporaryDirectory() as tmp:  # a pickle dropped into the folder is ignored, not read
        folder = _copy(good, tmp)
        (folder / "model.pt").write_bytes(pickle.dumps({"evil": 1}))
        assert _load_or_checkpoint_error(folder) is not None
