"""Mixed precision for training: `precision` fp32 | bf16 | fp16 -> an autocast context and a grad scaler.

fp32 is plain float32 (no autocast, the scaler disabled: `fit` then runs exactly as without them).
bf16 and fp16 run the mixing layers, the encoder and decoder under torch.autocast in that type;
fp16 also scales the loss (torch.amp.GradScaler) so small gradients do not underflow. The SSM
kernel and the FFT convolution stay in float32 / complex64 whatever the precision
(`workers.models.layer.SSMConv.ssm`, `workers.models.fftconv`), and the loss is computed on
float32 logits.
"""

from __future__ import annotations

import contextlib
from typing import get_args

import torch

from search_spaces.config.fields import Precision

PRECISIONS = get_args(Precision)  # fp32, bf16, fp16
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        from search_spaces.errors import ConfigError

        raise ConfigError(f"precision: got {precision!r}, expected one of {', '.join(PRECISIONS)}")
    return precision


def autocast(device: str | torch.device, precision: str):
    """The forward pass's context: nullcontext for fp32, else torch.autocast in bf16 / fp16."""
    if check_precision(precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=_DTYPES[precision])


def grad_scaler(device: str | torch.device, precision: str) -> torch.amp.GradScaler:
    """A GradScaler, enabled only for fp16 (disabled it passes losses and steps through unchanged)."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=check_precision(precision) == "fp16")
