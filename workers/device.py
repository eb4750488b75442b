"""Which torch device a trial trains on, and the name the ledger records for it.

`trial_device` is a pure function of what Ray assigned (the GPU ids of this worker, the
CUDA_VISIBLE_DEVICES Ray set for it) and what this node's torch can do (CUDA available, device
count): "cpu" for a trial that asked for no GPU, else "cuda:<i>" with i the position of the first
assigned id among the visible devices (Ray makes an actor see only its GPUs, so usually cuda:0;
fractional shares of one GPU see the same device). Every mismatch is one `DeviceError` line naming
the node. `assigned_device` is the thin edge that reads Ray's public API and torch; `device_label`
is the `train_device` string (`cuda:0 (NVIDIA H100)`, `cpu`).

Tests of GPU packing on a CPU machine start Ray with logical GPUs: there Ray assigns ids although
torch has no CUDA. With S4OP_LOGICAL_GPUS=1 in the trial's environment such a trial trains on the
CPU and records `cpu (logical GPU <id>)` instead of failing; nothing else reads that variable.
"""

from __future__ import annotations

import os
import socket
from typing import Sequence

from search_spaces.errors import S4opError

LOGICAL_GPUS_ENV = "S4OP_LOGICAL_GPUS"


class DeviceError(S4opError):
    """A trial's device cannot be used as asked (no CUDA on a node that Ray gave a GPU, ...)."""


def trial_device(gpu_request: float, gpu_ids: Sequence, *, cuda_available: bool, device_count: int,
                 visible_devices: str | None, node: str, logical_gpus: bool = False) -> str:
    """The torch device for a trial that asked for `gpu_request` GPUs (resources.gpu) and was
    assigned `gpu_ids` by Ray on `node`: "cpu", or "cuda:<i>" (see module docstring)."""
    if gpu_request <= 0:
        return "cpu"
    ids = [str(i).strip() for i in gpu_ids]
    if not ids:
        raise DeviceError(f"node {node}: resources.gpu={gpu_request:g} but Ray assigned this trial no GPU "
                          f"(ray.get_gpu_ids() is empty)")
    if logical_gpus:
        return "cpu"
    if not cuda_available:
        raise DeviceError(f"node {node}: Ray assigned GPU {ids[0]} to this trial (resources.gpu={gpu_request:g}) "
                          f"but torch there has no CUDA (torch.cuda.is_available() is false); install a CUDA "
                          f"build of torch on that node or set resources.gpu: 0")
    visible = [v.strip() for v in visible_devices.split(",") if v.strip()] if visible_devices else None
    if visible is not None:
        if ids[0] not in visible:
            raise DeviceError(f"node {node}: Ray assigned GPU {ids[0]} but CUDA_VISIBLE_DEVICES={visible_devices!r} "
                              f"does not list it")
        index = visible.index(ids[0])
    else:
        if not ids[0].isdigit():
            raise DeviceError(f"node {node}: Ray assigned GPU {ids[0]!r}, expected a device index "
                              f"(CUDA_VISIBLE_DEVICES is not set)")
        index = int(ids[0])
    if index >= device_count:
        raise DeviceError(f"node {node}: Ray assigned GPU {ids[0]} (cuda:{index}) but torch sees "
                          f"{device_count} CUDA device(s)")
    return f"cuda:{index}"


def device_label(device: str, name: str | None = None) -> str:
    """The ledger's `train_device`: "cpu", "cuda:0 (NVIDIA H100)"; `name` is the device's name."""
    return f"{device} ({name})" if name else device


def assigned_device(gpu_request: float) -> tuple[str, str]:
    """(device, train_device label) of the calling Ray worker, from ray.get_gpu_ids() and torch."""
    import ray
    import torch

    ids = list(ray.get_gpu_ids()) if gpu_request > 0 else []
    logical = os.environ.get(LOGICAL_GPUS_ENV, "") == "1"
    device = trial_device(gpu_request, ids, cuda_available=torch.cuda.is_available(),
                          device_count=torch.cuda.device_count() if torch.cuda.is_available() else 0,
                          visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"), node=socket.gethostname(),
                          logical_gpus=logical)
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
        return device, device_label(device, torch.cuda.get_device_name(torch.device(device)))
    return device, device_label(device, f"logical GPU {ids[0]}" if ids else None)


def local_device(requested: str) -> str:
    """`s4op train --device`: "cpu", "cuda" or "cuda:<i>" on this machine, checked against torch."""
    import torch

    if requested == "cpu":
        return "cpu"
    if requested != "cuda" and not (requested.startswith("cuda:") and requested[5:].isdigit()):
        raise DeviceError(f"--device: got {requested!r}, expected cpu, cuda or cuda:<index>")
    if not torch.cuda.is_available():
        raise DeviceError(f"--device: got {requested!r} but torch on {socket.gethostname()} has no CUDA "
                          f"(torch {torch.__version__}); use --device cpu")
    index = int(requested[5:]) if ":" in requested else 0
    if index >= torch.cuda.device_count():
        raise DeviceError(f"--device: got {requested!r} but torch sees {torch.cuda.device_count()} CUDA device(s)")
    return f"cuda:{index}"
