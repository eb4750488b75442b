"""The search folder `<storage>/<name>/`: every path in it, and every read and write of search.json
and config.yaml.

    config.yaml            the search config (written last at creation: marks the folder complete)
    search.json            meta: name, tracking URI, experiment, host, the config as started, facts
                           learned while running (data fingerprint, latency protocol)
    search.lock            the driver's lock (`lock.py`)
    ledger/                trials.parquet, stages.parquet (`ledger.py`)
    baseline/              the dense checkpoint of stage 0
    stages/stage-<k>/      Tune's experiment, starts.log, trials/<trial>/model/, best/
    plots/, mlflow.db, mlartifacts/, mlflow-outbox.jsonl

A search on an object store has the same layout under its URI (`stage_parts`, `trial_model_parts`
give the relative parts to join to it); `storage/work_copy.py` mirrors the local working copy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from search_spaces.errors import SearchStateError

META_NAME = "search.json"
CONFIG_NAME = "config.yaml"
OUTBOX_NAME = "mlflow-outbox.jsonl"


def stage_parts(stage: int) -> tuple[str, str]:
    """`stages/stage-<k>` as path parts (to join to a folder or a URI)."""
    return "stages", f"stage-{stage}"


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


META_SHAPE = {"name": str, "tracking_uri": str, "experiment": str, "config": dict, "facts": dict,
              "search_uri": str, "forced_changes": list}  # required: name, tracking_uri


def meta_problem(meta) -> str | None:
    """What is wrong with the shape of a parsed search.json, or None."""
    if not isinstance(meta, dict):
        return f"expected a JSON object, got {type(meta).__name__}"
    missing = [k for k in ("name", "tracking_uri") if k not in meta]
    if missing:
        return f"missing key {missing[0]!r}"
    for key, kind in META_SHAPE.items():
        if key in meta and meta[key] is not None and not isinstance(meta[key], kind):
            return f"{key!r} must be a JSON {dict(str='string', dict='object', list='array')[kind.__name__]}, " \
                   f"got {type(meta[key]).__name__}"
    if not meta["name"]:
        return "'name' is empty"
    return None


class SearchFolder:
    """Paths and metadata of one search folder (a local folder: the working copy for a URI)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    # ---- paths
    meta_path = property(lambda self: self.root / META_NAME)
    config_path = property(lambda self: self.root / CONFIG_NAME)
    baseline_dir = property(lambda self: self.root / "baseline")
    baseline_train_dir = property(lambda self: self.root / "baseline.train")  # the baseline's per-epoch state
    plots_dir = property(lambda self: self.root / "plots")
    artifacts_dir = property(lambda self: self.root / "mlartifacts")
    outbox_path = property(lambda self: self.root / OUTBOX_NAME)

    def stage_dir(self, stage: int) -> Path:
        return self.root.joinpath(*stage_parts(stage))

    def best_dir(self, stage: int) -> Path:
        return self.stage_dir(stage) / "best"

    def trials_dir(self, stage: int) -> Path:
        return self.stage_dir(stage) / "trials"

    def starts_log(self, stage: int) -> Path:
        return self.stage_dir(stage) / "starts.log"

    def is_search(self) -> bool:
        return self.meta_path.exists() and self.config_path.exists()

    # ---- search.json
    def read_meta(self) -> dict:
        try:
            meta = json.loads(self.meta_path.read_text())
        except FileNotFoundError:
            raise SearchStateError(f"{self.meta_path} not found; expected a search folder made by `s4op search`") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise SearchStateError(f"{self.meta_path} is not valid JSON ({exc})") from None
        except OSError as exc:
            raise SearchStateError(f"{self.meta_path} cannot be read ({exc.strerror or exc})") from None
        problem = meta_problem(meta)
        if problem:
            raise SearchStateError(f"{self.meta_path}: {problem}; the file was damaged or edited by hand "
                                   "(restore it from a backup of the search folder)")
        from orchestrator.search.relocate import localise_tracking

        return localise_tracking(meta, self.root)

    def write_meta(self, meta: dict) -> None:
        from orchestrator.search.relocate import stored_tracking

        write_text_atomic(self.meta_path, json.dumps(stored_tracking(meta, self.root), indent=1))

    def record_facts(self, **facts) -> dict:
        """Add facts learned while running (`facts` of search.json); returns them all."""
        meta = self.read_meta()
        known = meta.setdefault("facts", {})
        if all(known.get(k) == v for k, v in facts.items()):
            return known
        known.update(facts)
        self.write_meta(meta)
        return known

    def facts(self) -> dict:
        return dict(self.read_meta().get("facts") or {})

    # ---- config.yaml
    def read_config(self):
        from search_spaces.config import load_search_config

        if not self.config_path.exists():
            raise SearchStateError(f"{self.config_path} not found; expected a search folder made by `s4op search`")
        return load_search_config(self.config_path)

    def write_config(self, cfg) -> None:
        from search_spaces.config import dump_config

        write_text_atomic(self.config_path, dump_config(cfg))


def read_meta(search_dir: str | os.PathLike) -> dict:
    """search.json of `search_dir` (reads nothing else, sets nothing)."""
    return SearchFolder(search_dir).read_meta()


def search_config_near(path: str | os.PathLike):
    """The config of the search folder holding `path` (a checkpoint inside it), or None."""
    for folder in [Path(path), *Path(path).resolve().parents][:6]:
        if (folder / CONFIG_NAME).is_file() and (folder / "ledger").is_dir():
            return SearchFolder(folder).read_config()
    return None
