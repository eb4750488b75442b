"""AdamW with per-parameter settings: parameters tagged `_optim` (the SSM's dt, A, B) get their own group.

A tagged parameter's lr is min(tag lr, lr), so fine-tuning at a small lr never trains the SSM
faster than the rest; its weight decay is the tag's (0.0 for SSM parameters).
"""

from __future__ import annotations

import torch


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    plain: list[torch.nn.Parameter] = []
    tagged: dict[tuple, list[torch.nn.Parameter]] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        hp = getattr(p, "_optim", None)
        if hp is None:
            plain.append(p)
        else:
            key = tuple(sorted(hp.items()))
            tagged.setdefault(key, []).append(p)
    groups = [{"params": plain, "lr": lr, "weight_decay": weight_decay}] if plain else []
    for key, params in tagged.items():
        hp = dict(key)
        group = {"params": params, "lr": min(hp.get("lr", lr), lr),
                 "weight_decay": hp.get("weight_decay", weight_decay)}
        group.update({k: v for k, v in hp.items() if k not in ("lr", "weight_decay")})
        groups.append(group)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


def copy_optim_tags(src: torch.nn.Module, dst: torch.nn.Module) -> None:
    """Copy `_optim` tags onto dst's parameters of the same name (copy.deepcopy drops them)."""
    tags = {name: p._optim for name, p in src.named_parameters() if hasattr(p, "_optim")}
    for name, p in dst.named_parameters():
        if name in tags and not hasattr(p, "_optim"):
            p._optim = dict(tags[name])
