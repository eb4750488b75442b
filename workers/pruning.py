"""Operator pruning of S4/S4D models: kept sets, the masked reference and the compacted model.

Pruning channel h of a layer removes its SSM operator (K_h * u_h + D_h u_h). With bypass
"identity" (the paper) its input u_h passes through to the activation unchanged; with bypass "zero"
it contributes nothing and the mixing Linear loses its column. Kept indices are always in the
layer's original numbering 0..H-1, so compacting a compacted model again composes. `bypass_layer`
switches off every operator of one layer in place (the layer ablation).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from search_spaces.errors import ConfigError
from workers.models.backbone import S4Model
from workers.models.kept import validate_kept
from workers.models.layer import BYPASS_MODES
from workers.optim import copy_optim_tags


def kept_channels(model: S4Model) -> list[list[int]]:
    """The kept channels of each layer, original numbering (a masked reference's mask applied)."""
    return [block.conv.effective_kept() for block in model.blocks]


def _held(model: S4Model) -> list[list[int]]:
    return [block.conv.kept.tolist() for block in model.blocks]


def _check_bypass(model: S4Model, bypass: str | None) -> str:
    if bypass is None:
        return model.bypass
    if bypass not in BYPASS_MODES:
        raise ConfigError(f"bypass: got {bypass!r}, expected one of {', '.join(BYPASS_MODES)}")
    H = model.spec.d_model
    if bypass != model.bypass and any(len(k) < H for k in _held(model)):
        raise ConfigError(f"bypass: got {bypass!r}, but the model already prunes channels with bypass "
                          f"{model.bypass!r}; expected {model.bypass!r}")
    return bypass


def compact(model: S4Model, kept, bypass: str | None = None) -> S4Model:
    """A new model holding only the SSM parameters of `kept` (subset of the current kept sets).

    bypass None keeps the model's bypass; a dense model may take either.
    """
    bypass = _check_bypass(model, bypass)
    kept = validate_kept(kept, kept_channels(model), model.spec.d_model)
    blocks = [block.compacted(model.spec, ks, bypass) for block, ks in zip(model.blocks, kept)]
    new = copy.deepcopy(model, memo={id(model.blocks): None})  # blocks replaced below
    new.blocks = torch.nn.ModuleList(blocks)
    new.bypass = bypass
    copy_optim_tags(model, new)
    return new


def masked(model: S4Model, kept, bypass: str | None = None) -> S4Model:
    """The masked reference: a copy with all held parameters and the channels outside `kept` off."""
    bypass = _check_bypass(model, bypass)
    kept = validate_kept(kept, kept_channels(model), model.spec.d_model)
    new = copy.deepcopy(model)
    new.bypass = bypass
    for block, ks in zip(new.blocks, kept):
        conv = block.conv
        keep = set(ks)
        conv.mask = torch.tensor([k in keep for k in conv.kept.tolist()], device=conv.kept.device)  # (H_held)
        conv.bypass = bypass
        conv.clear_cache()
    copy_optim_tags(model, new)
    return new


def bypass_layer(model: S4Model, layer_index: int) -> None:
    """Switch off every SSM operator of one layer, in place (Table I's layer ablation).

    The layer's held channels stay (nothing is removed) but its operator mask is all off, so each
    channel takes the model's bypass: its input passes to the activation (identity) or is dropped
    (zero). The only way to empty a layer: `compact` and `masked` refuse an empty kept set.
    """
    n_layers = len(model.blocks)
    if isinstance(layer_index, bool) or not isinstance(layer_index, int) or not 0 <= layer_index < n_layers:
        raise ConfigError(f"layer_index: got {layer_index!r}, expected 0..{n_layers - 1}")
    conv = model.blocks[layer_index].conv
    conv.mask = torch.zeros(len(conv.kept), dtype=torch.bool, device=conv.kept.device)  # (H_held) all off
    conv.clear_cache()


def count_parameters(model: torch.nn.Module) -> int:
    """Number of scalar parameters (complex parameters are stored as real pairs)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def ssm_responses(model: S4Model, L: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per layer, (K (H_kept L), D (H_kept,)) of the kept channels; bidirectional kernels summed."""
    out = []
    for block in model.blocks:
        conv = block.conv
        K = conv.kernel(L).sum(0)  # (H_held L)
        D = conv.D  # (H_held)
        if conv.mask is not None:
            K, D = K[conv.mask], D[conv.mask]  # (H_kept L), (H_kept)
        out.append((K.detach().cpu().double().numpy(), D.detach().cpu().double().numpy()))
    return out
