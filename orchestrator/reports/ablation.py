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
import os
from pathlib import Path

import pandas as pd

from search_spaces.errors import CheckpointError, ConfigError
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


def config_near(checkpoint: Path):
    """The search config.yaml of a checkpoint inside a search folder, or None."""
    for folder in [checkpoint, *checkpoint.resolve().parents][:6]:
        if (folder / "config.yaml").is_file() and (folder / "ledger").is_dir():
            from search_spaces.config import load_search_config

            return load_search_config(folder / "config.yaml")
    return None


def run_ablation(checkpoint: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
                 out_dir: str | os.PathLike | None = None, max_len: int | None = None,
                 batch_size: int = 64, val_fraction: float | None = None) -> dict:
    """Table I of a checkpoint on its task's validation split; writes CSV + bar plot (PNG)."""
    from orchestrator.reports.plots import plot_ablation
    from orchestrator.reports.table import to_markdown
    from workers.checkpoint import load_checkpoint
    from workers.data import load_task

    checkpoint = Path(checkpoint)
    model, meta = load_checkpoint(checkpoint)
    cfg = config_near(checkpoint)
    task = meta.get("task") or (cfg.task.name if cfg else None)
    if task is None:
        raise CheckpointError(f"{checkpoint}/model.json: no task recorded; expected a checkpoint saved with its task")
    if data_dir is None and cfg is not None:
        data_dir = cfg.task.data_dir
    if data_dir is None:
        raise ConfigError(f"ablate-layers {checkpoint}: no --data given and no search config.yaml above the "
                          "checkpoint; expected --data DIR")
    if max_len is None and cfg is not None:
        max_len = cfg.task.max_len
    if val_fraction is None:
        val_fraction = cfg.task.val_fraction if cfg is not None else 0.2
    own = {"loader": cfg.task.loader, "metric": cfg.task.metric} if cfg is not None else {}
    from workers.data.node_cache import readable_data_dir

    splits = load_task(task, readable_data_dir(data_dir), max_len=max_len, val_fraction=val_fraction, **own)
    table = ablate_layers(model, splits.val, splits.info, batch_size=batch_size)
    out = Path(out_dir) if out_dir is not None else checkpoint / "ablation"
    files = _write_ablation(table, out)
    files.append(plot_ablation(table, out / "ablation.png"))
    return {"table": table, "markdown": to_markdown(display_ablation(table)), "files": files, "out": out}


def _write_ablation(table, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    csv, parquet = out / "table_i.csv", out / "table_i.parquet"
    table.to_csv(csv, index=False)
    table.to_parquet(parquet, index=False)
    return [csv, parquet]


