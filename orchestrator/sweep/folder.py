"""The sweep folder `<storage>/<sweep>/`: every path in it, and every read and write of sweep.json.

    sweep.yaml             the sweep file as given
    sweep.json             the expansion: each search's name, config file and baseline key (written
                           last at creation: marks the folder complete)
    search.lock            the sweep driver's lock (`orchestrator/search/lock.py`)
    configs/<search>.yaml  each search's config, pointed at its shared baseline
    baselines/<key>/       model/ (the shared checkpoint), train/ (per-epoch state, epochs.log),
                           mlflow.db + mlartifacts/ (the one training run)
    searches/<search>/     each search's own search folder (`orchestrator/search/folder.py`)
    logs/<search>.log      each search driver's console
    report/                `s4op sweep report`
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from orchestrator.search.folder import write_text_atomic
from search_spaces.errors import SearchStateError

SWEEP_META = "sweep.json"


class SweepFolder:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    meta_path = property(lambda self: self.root / SWEEP_META)
    file_path = property(lambda self: self.root / "sweep.yaml")
    configs_dir = property(lambda self: self.root / "configs")
    baselines_dir = property(lambda self: self.root / "baselines")
    searches_dir = property(lambda self: self.root / "searches")
    logs_dir = property(lambda self: self.root / "logs")
    report_dir = property(lambda self: self.root / "report")

    def config_path(self, search: str) -> Path:
        return self.configs_dir / f"{search}.yaml"

    def search_dir(self, search: str) -> Path:
        return self.searches_dir / search

    def log_path(self, search: str) -> Path:
        return self.logs_dir / f"{search}.log"

    def baseline_dir(self, key: str) -> Path:
        return self.baselines_dir / key

    def baseline_checkpoint(self, key: str) -> Path:
        return self.baseline_dir(key) / "model"

    def baseline_state(self, key: str) -> Path:
        return self.baseline_dir(key) / "train"

    def baseline_tracking_uri(self, key: str) -> str:
        from orchestrator.tracking.client import default_tracking_uri

        return default_tracking_uri(self.baseline_dir(key))

    def is_sweep(self) -> bool:
        return self.meta_path.is_file()

    def read_meta(self) -> dict:
        """sweep.json: {name, created_at, max_parallel, searches: [{name, key, config}]}."""
        try:
            meta = json.loads(self.meta_path.read_text())
        except FileNotFoundError:
            raise SearchStateError(f"{self.root} is not a sweep folder ({SWEEP_META} not found); "
                                   "expected <storage>/<sweep> made by `s4op sweep SWEEP.yaml`") from None
        except (ValueError, UnicodeDecodeError, OSError) as exc:
            raise SearchStateError(f"{self.meta_path} cannot be read as JSON ({exc})") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("searches"), list) or not meta.get("name"):
            raise SearchStateError(f"{self.meta_path}: expected an object with name and searches; "
                                   "the file was damaged or edited by hand")
        return meta

    def write_meta(self, meta: dict) -> None:
        write_text_atomic(self.meta_path, json.dumps(meta, indent=1))
