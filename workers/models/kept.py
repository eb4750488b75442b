"""Kept sets: which channels (original numbering 0..H-1) of each layer keep their SSM operator.

`validate_kept` checks a requested kept set against the current one; the model (`backbone`) and
pruning (`workers.pruning`) both use it.
"""

from __future__ import annotations

import numpy as np
import torch

from search_spaces.errors import ConfigError


def validate_kept(kept, current: list[list[int]], channels: int | None = None) -> list[list[int]]:
    """Check `kept` (one list of original indices per layer) against the current kept sets.

    Returns the kept sets sorted; raises ConfigError naming the layer and value otherwise.
    """
    if not isinstance(kept, (list, tuple)) or len(kept) != len(current):
        n = len(kept) if isinstance(kept, (list, tuple)) else type(kept).__name__
        raise ConfigError(f"kept: got {n} layer(s), expected a list of {len(current)} lists of channel indices")
    result = []
    for layer, (ks, cur) in enumerate(zip(kept, current)):
        H = channels if channels is not None else (max(cur) + 1 if cur else 0)
        if isinstance(ks, (torch.Tensor, np.ndarray)):
            ks = ks.tolist()
        if not isinstance(ks, (list, tuple)):
            raise ConfigError(f"kept[layer {layer}]: got {ks!r}, expected a list of channel indices")
        if len(ks) == 0:
            raise ConfigError(f"kept[layer {layer}]: got an empty set, expected at least one kept channel")
        clean = []
        for k in ks:
            if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
                raise ConfigError(f"kept[layer {layer}]: got {k!r}, expected an integer channel index")
            k = int(k)
            if not 0 <= k < H:
                raise ConfigError(f"kept[layer {layer}]: index {k} out of range, expected 0..{H - 1}")
            clean.append(k)
        if len(set(clean)) != len(clean):
            dup = sorted({k for k in clean if clean.count(k) > 1})
            raise ConfigError(f"kept[layer {layer}]: duplicate index {dup[0]}, expected distinct channel indices")
        extra = sorted(set(clean) - set(cur))
        if extra:
            raise ConfigError(f"kept[layer {layer}]: index {extra[0]} is already pruned, expected a subset of the current kept set")
        result.append(sorted(clean))
    return result
