"""The layer ablation of the paper's Table I: deactivate one layer's SSM operators at a time.

For each layer i, a copy of the model has every channel of layer i bypassed (identity bypass: the
layer's SSM convolution and D term are skipped and its input goes straight to the activation, as for
a pruned channel; a model pruned with bypass "zero" drops them instead) and is evaluated on the
validation split without fine-tuning. The normal pruning API refuses an empty kept set, so this uses
`workers.pruning.bypass_layer` (the layer's operator mask set to all off): nothing is removed, the
layer's operators are simply switched off.
"""

from __future__ import annotations

import copy
import math

import pandas as pd

from search_spaces.errors import ConfigError
from workers.pruning import bypass_layer as switch_off_layer

COLUMNS = ["layer", "metric_name", "metric", "drop", "kept_channels"]


def bypass_layer(model, layer: int):
    """A copy of `model` with all SSM operators of `layer` deactivated (the others untouched)."""
    n_layers = len(model.blocks)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layers:
        raise ConfigError(f"ablation layer: got {layer!r}, expected 0..{n_layers - 1}")
    new = copy.deepcopy(model).eval()
    switch_off_layer(new, layer)
    return new


def ablate_layers(model, split, info, *, batch_size: int = 64, evaluate=None) -> pd.DataFrame:
    """Table I: the baseline (layer -1) and each layer deactivated in turn, evaluated on `split`.

    Columns: layer, metric_name, metric, drop (baseline metric - metric), kept_channels (of the
    layer in the undamaged model).
    """
    if evaluate is None:
        from workers.training import evaluate
    model = model.eval()
    base = float(evaluate(model, split, info, batch_size=batch_size))
    rows = [{"layer": -1, "metric_name": info.metric, "metric": base, "drop": 0.0, "kept_channels": math.nan}]
    for i, block in enumerate(model.blocks):
        metric = float(evaluate(bypass_layer(model, i), split, info, batch_size=batch_size))
        rows.append({"layer": i, "metric_name": info.metric, "metric": metric, "drop": base - metric,
                     "kept_channels": len(block.conv.effective_kept())})
    return pd.DataFrame(rows, columns=COLUMNS)


def display_ablation(table: pd.DataFrame) -> pd.DataFrame:
    """Table I as strings: 'baseline' / 'layer i off', metric %, drop in points."""
    rows = []
    for r in table.itertuples(index=False):
        rows.append({"model": "baseline" if r.layer < 0 else f"layer {int(r.layer)} off",
                     f"val {r.metric_name} %": f"{r.metric * 100:.2f}",
                     "drop (points)": "-" if r.layer < 0 else f"{r.drop * 100:+.2f}"})
    return pd.DataFrame(rows)
