"""`s4op sweep SWEEP.yaml` step one: the sweep file checked whole, the data made ready, the baseline
keys computed, then the sweep folder written (`folder.py`). Nothing is created before every search's
config is valid. Running the same sweep file again finds its folder and continues it; a changed file
is refused naming the first search that differs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from orchestrator.search.create import now
from orchestrator.sweep.folder import SweepFolder
from orchestrator.sweep.spec import PlannedSearch, baseline_key, expand_sweep, read_sweep, with_baseline
from search_spaces.config import dump_config
from search_spaces.errors import ConfigError, SearchStateError


def plan_sweep(path: str | os.PathLike):
    """(sweep file, planned searches), every config validated; nothing written."""
    sweep = read_sweep(path)
    return sweep, expand_sweep(sweep, source=str(path), relative_to=Path(path).resolve().parent)


def data_fingerprints(planned: list[PlannedSearch]) -> dict[str, str]:
    """{search: fingerprint of its task data}, each data folder generated (when missing) and hashed once."""
    from orchestrator.baseline import generate_missing
    from workers.data import fingerprint

    by_dir: dict[str, str] = {}
    out = {}
    for p in planned:
        where = str(p.config.task.data_dir)
        if where not in by_dir:
            by_dir[where] = fingerprint(generate_missing(p.config), cached=True)
        out[p.name] = by_dir[where]
    return out


def _check_unchanged(folder: SweepFolder, planned: list[PlannedSearch], source: str) -> None:
    from search_spaces.config import SearchConfig, config_diff

    stored = {s["name"]: s for s in folder.read_meta()["searches"]}
    names = [p.name for p in planned]
    if sorted(stored) != sorted(names):
        extra = sorted(set(names) ^ set(stored))
        raise SearchStateError(f"{source}: sweep {folder.root} was made with other searches ({', '.join(extra)} "
                               f"differ); continue it with `s4op sweep resume {folder.root}` or rename the sweep")
    for p in planned:
        diff = config_diff(SearchConfig.from_dict(stored[p.name]["planned"], source=str(folder.meta_path)), p.config)
        if diff:
            raise SearchStateError(f"{source}: search {p.name} of sweep {folder.root} changed since it started "
                                   f"({'; '.join(diff)}); continue it with `s4op sweep resume {folder.root}` "
                                   "or rename the sweep")


def create_sweep(path: str | os.PathLike, *, storage: str | os.PathLike = "s4op-runs", log=print) -> Path:
    """The sweep folder of the sweep file at `path` under `storage`, made now or found (unchanged)."""
    if "://" in str(storage):
        raise ConfigError(f"--storage {storage}: a sweep keeps its folder on a shared file system; "
                          "object-store storage (s3://, gs://) is for single searches")
    sweep, planned = plan_sweep(path)
    folder = SweepFolder(Path(storage).resolve() / sweep.name)
    if folder.is_sweep():
        _check_unchanged(folder, planned, str(path))
        log(f"sweep {sweep.name}: continuing {folder.root}")
        return folder.root
    prints = data_fingerprints(planned)
    keys = {p.name: baseline_key(p.config, prints[p.name]) for p in planned}
    tmp = folder.root.with_name(f".{sweep.name}.creating")
    shutil.rmtree(tmp, ignore_errors=True)
    staged = SweepFolder(tmp)
    staged.configs_dir.mkdir(parents=True)
    shutil.copyfile(path, staged.file_path)
    searches = []
    for p in planned:
        key = keys[p.name]
        cfg = p.config if key is None else with_baseline(p.config, folder.baseline_checkpoint(key))
        staged.config_path(p.name).write_text(dump_config(cfg))
        searches.append({"name": p.name, "key": key, "config": str(folder.config_path(p.name)),
                         "data_fingerprint": prints[p.name], "planned": p.config.model_dump(mode="json")})
    staged.write_meta({"name": sweep.name, "created_at": now(), "source": str(Path(path).resolve()),
                       "max_parallel": sweep.max_parallel, "searches": searches})
    folder.root.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, folder.root)  # whole or not at all
    shared = len({k for k in keys.values() if k})
    log(f"sweep {sweep.name}: {len(planned)} searches, {shared} baseline(s) to train, in {folder.root}")
    return folder.root
