"""Checkpoints: a folder with `model.safetensors` (tensors) and `model.json` (everything else).

model.json holds the format version, the ModelSpec, the kept channels per layer (original
numbering), the bypass, and the caller's task, data fingerprint, metrics and extra. Loading
rebuilds the compacted architecture from model.json and fills it from model.safetensors; nothing is
ever unpickled. Files are written to temporary names and renamed, so a folder never holds half a
checkpoint under the real names.

Every function also takes an object-store URI (`s3://bucket/.../model`, see `workers/objectstore.py`)
for the folder: saving writes locally then uploads model.safetensors and, last, model.json (one
object each, so a checkpoint whose model.json exists is whole); loading downloads to a temporary
folder first. `fetch_checkpoint` and `copy_checkpoint` move a checkpoint between the two.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from search_spaces.errors import CheckpointError, S4opError
from workers import objectstore
from workers.models.backbone import S4Model
from workers.models.spec import ModelSpec
from workers.pruning import compact, count_parameters, kept_channels

FORMAT = "s4op-checkpoint"
FORMAT_VERSION = 2  # 2: identity-bypass mixing columns kept-first (SSMConv.output_channels); 1: original order
READABLE_VERSIONS = (1, 2)
WEIGHTS = "model.safetensors"
META = "model.json"


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_checkpoint(model: S4Model, folder, *, task: str | None = None, data_fingerprint: str | None = None,
                    metrics: dict | None = None, extra: dict | None = None) -> Path:
    """Write model.safetensors and model.json into `folder` (created); returns the folder.

    A URI `folder` is written locally first and uploaded (`copy_checkpoint`); the URI is returned.
    """
    if objectstore.is_uri(folder):
        with tempfile.TemporaryDirectory(prefix="s4op-save-") as tmp:
            save_checkpoint(model, tmp, task=task, data_fingerprint=data_fingerprint, metrics=metrics, extra=extra)
            return copy_checkpoint(tmp, folder)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if any(block.conv.mask is not None for block in model.blocks):
        model = compact(model, kept_channels(model))  # a masked reference is stored compacted
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": model.spec.to_dict(),
        "kept": kept_channels(model),
        "bypass": model.bypass,
        "params": count_parameters(model),
        "task": task,
        "data_fingerprint": data_fingerprint,
        "metrics": metrics or {},
        "extra": extra or {},
    }
    try:
        text = json.dumps(meta, indent=2, sort_keys=True, default=_jsonable)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{folder / META}: metadata is not JSON serialisable ({exc})") from None
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _write_atomic(folder / WEIGHTS, lambda p: save_file(tensors, str(p), metadata={"format": FORMAT}))
    _write_atomic(folder / META, lambda p: p.write_text(text + "\n"))
    return folder


def read_meta(folder) -> dict:
    """The parsed model.json of a checkpoint folder (CheckpointError if missing or malformed)."""
    if objectstore.is_uri(folder):
        path = objectstore.join_uri(folder, META)
        try:
            text = objectstore.read_bytes(path).decode()
        except (FileNotFoundError, IsADirectoryError):
            raise CheckpointError(f"{path}: missing, expected a checkpoint folder with {META} and {WEIGHTS}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path}: unreadable ({exc})") from None
    else:
        path = Path(folder) / META
        if not path.is_file():
            raise CheckpointError(f"{path}: missing, expected a checkpoint folder with {META} and {WEIGHTS}")
        text = None
    try:
        meta = json.loads(path.read_text() if text is None else text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an s4op checkpoint, expected \"format\": \"{FORMAT}\"")
    if meta.get("format_version") not in READABLE_VERSIONS:
        raise CheckpointError(f"{path}: format_version {meta.get('format_version')!r}, "
                              f"expected one of {', '.join(map(str, READABLE_VERSIONS))}")
    for key in ("spec", "kept", "bypass"):
        if key not in meta:
            raise CheckpointError(f"{path}: missing key {key!r}")
    return meta


def load_checkpoint(folder, *, map_location: str | torch.device = "cpu") -> tuple[S4Model, dict]:
    """Rebuild the (compacted) model of a checkpoint folder; returns (model in eval mode, meta)."""
    if objectstore.is_uri(folder):
        with tempfile.TemporaryDirectory(prefix="s4op-load-") as tmp:
            return load_checkpoint(fetch_checkpoint(folder, Path(tmp) / "model"), map_location=map_location)
    folder = Path(folder)
    meta = read_meta(folder)
    meta_path, weights_path = folder / META, folder / WEIGHTS
    try:
        spec = ModelSpec.from_dict(meta["spec"])
        model = S4Model(spec, kept=meta["kept"], bypass=meta["bypass"])
    except S4opError as exc:
        raise CheckpointError(f"{meta_path}: bad architecture ({exc})") from None
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: missing, expected the checkpoint's tensors")
    try:
        tensors = load_file(str(weights_path), device=str(map_location))
    except Exception as exc:  # safetensors raises its own error types for truncated/corrupt files
        raise CheckpointError(f"{weights_path}: unreadable or truncated ({type(exc).__name__}: {exc})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        what = f"missing tensor {missing[0]!r}" if missing else f"unexpected tensor {unexpected[0]!r}"
        raise CheckpointError(f"{weights_path}: does not match the architecture in {META}: {what}")
    for key, value in expected.items():
        if tuple(tensors[key].shape) != tuple(value.shape):
            raise CheckpointError(f"{weights_path}: tensor {key!r} has shape {tuple(tensors[key].shape)}, "
                                  f"expected {tuple(value.shape)} from {META}")
    for i, block in enumerate(model.blocks):
        if tensors[f"blocks.{i}.conv.kept"].tolist() != block.conv.kept.tolist():
            raise CheckpointError(f"{weights_path}: kept channels of layer {i} differ from {META}")
    if meta["format_version"] == 1:
        tensors = _mix_columns_kept_first(model, tensors)
    model.load_state_dict(tensors)
    model.to(map_location)
    model.eval()
    return model, meta


def _mix_columns_kept_first(model: S4Model, tensors: dict) -> dict:
    """Format 1 stored identity-bypass mixing columns in original channel order; reorder them to
    the layer's output order (kept first)."""
    tensors = dict(tensors)
    for i, block in enumerate(model.blocks):
        if block.conv.bypass == "identity" and not block.conv.dense:
            key = f"blocks.{i}.mix.weight"
            tensors[key] = tensors[key][:, block.conv.order.to(tensors[key].device)]  # (2H H)
    return tensors


def checkpoint_sha256(folder) -> str:
    """sha256 over model.json and model.safetensors (names and bytes)."""
    digest = hashlib.sha256()
    if objectstore.is_uri(folder):
        for name in (META, WEIGHTS):
            uri = objectstore.join_uri(folder, name)
            try:
                data = objectstore.read_bytes(uri)
            except (FileNotFoundError, IsADirectoryError):
                raise CheckpointError(f"{uri}: missing, expected a checkpoint folder with {META} and {WEIGHTS}") from None
            digest.update(name.encode() + b"\0" + data)
        return digest.hexdigest()
    folder = Path(folder)
    for name in (META, WEIGHTS):
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing, expected a checkpoint folder with {META} and {WEIGHTS}")
        digest.update(name.encode() + b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def fetch_checkpoint(source, folder) -> Path:
    """A local checkpoint folder `folder` holding the checkpoint at `source` (a URI or a folder).

    Files are written to temporary names and renamed, model.json last.
    """
    copy_checkpoint(source, folder)
    return Path(folder)


def copy_checkpoint(source, target):
    """Copy a checkpoint between folders and/or URIs (model.safetensors first, model.json last).

    Object-to-object copies stay on the store's side. Returns `target`. A source without model.json
    raises CheckpointError naming it.
    """
    read_meta(source)  # a whole checkpoint, or CheckpointError
    for name in (WEIGHTS, META):
        src = objectstore.join_uri(source, name) if objectstore.is_uri(source) else Path(source) / name
        if objectstore.is_uri(target):
            dst = objectstore.join_uri(target, name)
            try:
                if objectstore.is_uri(source):
                    objectstore.copy_object(src, dst)
                else:
                    objectstore.upload_file(src, dst)
            except FileNotFoundError:
                raise CheckpointError(f"{src}: missing, expected a checkpoint folder with {META} and {WEIGHTS}") from None
            continue
        dst = Path(target) / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            if objectstore.is_uri(source):
                objectstore.download_file(src, dst)
            else:
                _write_atomic(dst, lambda p, src=src: shutil.copyfile(src, p))
        except FileNotFoundError:
            raise CheckpointError(f"{src}: missing, expected a checkpoint folder with {META} and {WEIGHTS}") from None
    return target
