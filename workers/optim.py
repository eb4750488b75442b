"""Per-parameter optimiser settings: `register` tags a parameter, `build_optimizer` reads the tags.

A module creates a parameter that needs its own settings with `register(module, name, tensor,
lr=..., weight_decay=...)` (the SSM's dt, A, B, P: weight decay 0), which stores them in the
parameter's `_optim` dict; lr 0.0 makes the tensor a buffer instead (not trained).
`build_optimizer` gives every distinct `_optim` its own AdamW group and the rest the run's lr and
weight decay.

The SSM's lr is `model.ssm_lr`, honoured as given in every run (baseline training and
fine-tuning). `model.ssm_lr: null` (the default) is the S4 authors' default instead:
min(DEFAULT_SSM_LR_CAP, the run's lr), i.e. 0.001 for a baseline trained at 0.003 and the run's
lr when fine-tuning at 1e-4. There is no other cap.
"""

from __future__ import annotations

from typing import Optional

import torch

DEFAULT_SSM_LR_CAP = 0.001  # the S4 authors' default SSM lr is min(0.001, lr)


def register(module: torch.nn.Module, name: str, tensor: torch.Tensor, *, lr: Optional[float] = None,
             weight_decay: float = 0.0) -> Optional[torch.nn.Parameter]:
    """module.<name> = tensor, trained with its own settings (`_optim`), or a buffer when lr == 0.0.

    lr None: the authors' default, min(DEFAULT_SSM_LR_CAP, run lr) (see `tagged_lr`).
    """
    if lr == 0.0:
        module.register_buffer(name, tensor)
        return None
    p = torch.nn.Parameter(tensor)
    module.register_parameter(name, p)
    p._optim = {"lr": lr, "weight_decay": weight_decay}
    return p


def tagged_lr(tag_lr: Optional[float], run_lr: float) -> float:
    """The lr of a tagged parameter in a run at `run_lr`: its own lr, or the authors' default for None."""
    return min(DEFAULT_SSM_LR_CAP, run_lr) if tag_lr is None else float(tag_lr)


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
        group = {"params": params, "lr": tagged_lr(hp.get("lr"), lr),
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
