"""`s4op import` and `s4op export --format state-spaces`: the S4 authors' state dicts in and out.

import: read the file with `torch.load(weights_only=True)` (never unpickled otherwise), infer the
layout (`workers.interop.state_spaces`), build the S4Model and save an s4op checkpoint folder that
`s4op search CONFIG --set baseline.checkpoint=DIR` prunes. With a task config the model is checked
against the data (input kind, channels or vocabulary, classes) and scored on val and test; pre- and
post-norm are both scored and a guess that the other placement clearly beats is refused.

export: an s4op checkpoint (imported or our own, pruned or dense) as a dense state dict of the
layout it came from (or the closest one for its spec), with a `<out>.json` sidecar naming the
constructor arguments the state dict cannot carry (prenorm, mode, bidirectional, disc).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import zipfile
from pathlib import Path

import torch

from search_spaces.errors import CheckpointError, ConfigError
from workers.interop.state_spaces import Layout, from_s4op, layout_for, read_layout, to_s4op, unwrap

PRENORM_MARGIN = 0.05  # the other norm placement must beat the chosen one by this much to refuse,
# and by two standard errors of a metric on n val rows (2 sqrt(1/4n)), so noise never refuses
CHECK_ROWS = 512  # val rows scored for the norm-placement check


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from `torch.save`, loaded with weights_only=True; a bad file is a CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; expected a file written by torch.save(model.state_dict())")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile,
            AttributeError, KeyError, IndexError, TypeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not a weights-only torch file ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
    return unwrap(obj, str(path))


def _fits(spec, info, source: str) -> None:
    """The imported model takes the task's inputs and predicts its classes (else ConfigError)."""
    what = f"{source} (input {spec.input_kind}, d_input {spec.d_input}, {spec.d_output} outputs)"
    if spec.input_kind != info.input_kind:
        raise ConfigError(f"{what} does not fit task {info.name}: the data holds {info.input_kind} input; "
                          f"pass --input {info.input_kind} if the encoder shape is ambiguous")
    if info.input_kind == "real" and spec.d_input != info.d_input:
        raise ConfigError(f"{what} does not fit task {info.name}: the data has {info.d_input} channels")
    if info.input_kind == "tokens" and info.d_input > spec.d_input:
        raise ConfigError(f"{what} does not fit task {info.name}: the data holds token ids up to {info.d_input - 1}")
    if spec.d_output != info.n_classes:
        raise ConfigError(f"{what} does not fit task {info.name}: the data has {info.n_classes} "
                          f"{'labels' if info.multilabel else 'classes'}")


def _score(sd, lay: Layout, splits) -> float:
    from workers.training import evaluate

    rows = splits.val.take(torch.arange(min(len(splits.val), CHECK_ROWS)).numpy())
    return float(evaluate(to_s4op(sd, lay), rows, splits.info, batch_size=32))


def import_state_spaces(checkpoint, out, *, prenorm: bool = False, input_kind: str | None = None,
                        disc: str = "zoh", task_config=None, overrides=()) -> dict:
    """Import an example.py state dict into the s4op checkpoint folder `out` (must be new or empty)."""
    from search_spaces.config import load_search_config
    from workers.checkpoint import save_checkpoint
    from workers.data import fingerprint, load_task
    from workers.training import evaluate

    path, out = Path(checkpoint), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out}: exists and is not an empty folder; choose a new folder")
    sd = read_state_dict(path)
    lay = read_layout(sd, str(path), prenorm=prenorm, input_kind=input_kind, disc=disc)
    model = to_s4op(sd, lay)
    result = {"layout": lay.to_dict(), "spec": model.spec.to_dict(), "metrics": {}, "norm_check": None}
    task = data_fp = None
    length = None
    if task_config is not None:
        cfg = load_search_config(task_config, overrides)
        t = cfg.task
        from workers.data.node_cache import readable_data_dir

        data_dir = readable_data_dir(t.data_dir)  # a URI: fetched into this machine's data cache
        splits = load_task(t.name, data_dir, max_len=t.max_len, val_fraction=t.val_fraction,
                           loader=t.loader, metric=t.metric)
        _fits(model.spec, splits.info, str(path))
        chosen = _score(sd, lay, splits)
        other = _score(sd, dataclasses.replace(lay, prenorm=not prenorm), splits)
        name = lambda pre: "pre-norm" if pre else "post-norm"  # noqa: E731
        result["norm_check"] = {name(prenorm): chosen, name(not prenorm): other}
        n = min(len(splits.val), CHECK_ROWS)
        if other > chosen + max(PRENORM_MARGIN, (1.0 / n) ** 0.5):
            flag = "drop --prenorm" if prenorm else "pass --prenorm"
            raise ConfigError(f"{path}: as {name(prenorm)} the model scores val {splits.info.metric} {chosen:.3f}, "
                              f"as {name(not prenorm)} {other:.3f}; the state dict cannot say which it was built "
                              f"with: {flag} if it was built {name(not prenorm)}")
        result["metrics"] = {"val_metric": float(evaluate(model, splits.val, splits.info, batch_size=32)),
                             "test_metric": float(evaluate(model, splits.test, splits.info, batch_size=32)),
                             "metric_name": splits.info.metric}
        task, data_fp, length = t.name, fingerprint(data_dir), int(splits.train.x.shape[1])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    extra = {"state_spaces": lay.to_dict(), "imported_from": str(path.resolve()), "source_sha256": digest}
    if length:
        extra["length"] = length
    save_checkpoint(model, out, task=task, data_fingerprint=data_fp, metrics=result["metrics"], extra=extra)
    result["out"] = str(out)
    return result


def export_state_spaces(folder, out) -> dict:
    """Write checkpoint `folder`'s model as a state dict of the authors' layout (+ `<out>.json`)."""
    from workers.checkpoint import load_checkpoint

    model, meta = load_checkpoint(folder)
    lay = layout_for(model, (meta.get("extra") or {}).get("state_spaces"))
    sd = from_s4op(model, lay)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save(sd, tmp)
    tmp.replace(out)
    layer = {"s4d-minimal": "S4D(d_model, d_state=N) from models/s4/s4d.py",
             "s4block-diag": "S4Block(d_model, mode='diag', d_state=N, bidirectional=..., disc=...) from models/s4/s4.py",
             "s4block-dplr": "S4Block(d_model, mode='dplr', d_state=N, bidirectional=...) from models/s4/s4.py"}[lay.layer]
    record = {"format": "state-spaces", "layout": lay.to_dict(), "layer": layer, "source": str(folder),
              "kept": [b.conv.kept.tolist() for b in model.blocks], "bypass": model.bypass,
              "note": "pruned operators have C = 0 and D = 1 (identity bypass) or 0 (zero bypass); "
                      "mean pooling over all positions as in example.py"}
    Path(f"{out}.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
