"""`s4op resume`: continue a search where it stopped.

Completed stages (ledger) are skipped, the interrupted stage is restored by the driver with
`Tuner.restore(resume_errored=True)`. The config must match the one the search started with
(recorded in search.json): a hand-edited config.yaml, `--config` or `--set` that changes anything
is refused with the list of differences, unless `--force`: then the new config is recorded, unless
a change contradicts what already ran (a completed stage's rate, the baseline, the settings of the
interrupted stage's trials): that is refused naming the setting (`forced.py`).
A search on an object store (`s3://...`) is pulled into its local working copy first
(`orchestrator/remote.py`). `--break-lock` takes over a lock left by a driver on another host.
"""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.search.folder import CONFIG_NAME, META_NAME, SearchFolder, read_meta
from orchestrator.search.interrupt import interruptible
from orchestrator.search.loop import run_locked
from orchestrator.search.lock import acquire_lock
from search_spaces.errors import SearchStateError


def check_config(search_dir: str | os.PathLike, *, config: str | None = None, overrides=(), force: bool = False,
                 log=print):
    """The config to resume with; raises `SearchStateError` listing differences unless `force`."""
    from search_spaces.config import SearchConfig, config_diff, load_search_config

    search_dir = Path(search_dir)
    meta = read_meta(search_dir)
    source = config or (search_dir / CONFIG_NAME)
    if not Path(source).exists() and config is None:
        raise SearchStateError(f"{source} not found; expected a search folder made by `s4op search`")
    new = load_search_config(source, overrides)
    stored = SearchConfig.from_dict(meta["config"], source=str(search_dir / META_NAME)) if "config" in meta else new
    diff = config_diff(stored, new)
    if diff and not force:
        raise SearchStateError(f"{source}: the config of search {search_dir} changed since it started ({'; '.join(diff)}); "
                               "resume with the original config, or pass --force to continue with the new one")
    if diff:
        log(f"s4op: --force: continuing {search_dir} with a changed config: " + "; ".join(diff))
    return new, diff


def resume_search(search_dir: str | os.PathLike, *, config: str | None = None, overrides=(), force: bool = False,
                  address: str | None = "local", view=None, num_cpus: int | None = None, log=print,
                  work_dir: str | os.PathLike | None = None, break_lock: bool = False) -> Path:
    """Continue the search in `search_dir` (a folder or an s3:// / gs:// URI) to its end (lock held
    throughout); returns the local search folder (the working copy for a URI)."""
    from orchestrator.storage.work_copy import SearchStore
    from workers.objectstore import is_uri

    store = None
    if is_uri(str(search_dir)):
        store = SearchStore.open(str(search_dir), work_dir=work_dir)
        search_dir = store.local
        lock = store.lock(break_lock=break_lock)
        try:
            store.pull("resume")  # under the lock: the store's state wins over an older working copy
        except BaseException:
            lock.release()
            raise
    else:
        search_dir = Path(search_dir).resolve()
        if not (search_dir / META_NAME).exists():
            raise SearchStateError(f"{search_dir} is not a search folder ({META_NAME} not found); "
                                   "expected <storage>/<name> made by `s4op search`")
        uri = read_meta(search_dir).get("search_uri")
        if uri:  # the working copy of a search on an object store: resume the search itself
            return resume_search(uri, config=config, overrides=overrides, force=force, address=address, view=view,
                                 num_cpus=num_cpus, log=log, work_dir=search_dir.parent, break_lock=break_lock)
        lock = acquire_lock(search_dir, break_lock=break_lock)
    try:
        with interruptible(search_dir, lock):
            return _resume_locked(search_dir, store, config=config, overrides=overrides, force=force,
                                  address=address, view=view, num_cpus=num_cpus, log=log)
    finally:
        lock.release()


def _resume_locked(search_dir: Path, store, *, config, overrides, force, address, view, num_cpus, log) -> Path:
    from orchestrator.storage.work_copy import localise_meta

    cfg, diff = check_config(search_dir, config=config, overrides=overrides, force=force, log=log)
    meta = read_meta(search_dir)
    if diff and "config" in meta:  # the ledger must keep saying what really ran
        from orchestrator.search import ledger
        from orchestrator.search.forced import check_forced, interrupted_stage

        done = set(ledger.completed_stages(search_dir))
        old_rates = (meta["config"].get("search") or {}).get("rates") or []
        check_forced(meta["config"], cfg.model_dump(mode="json"), completed=done,
                     interrupted=interrupted_stage(SearchFolder(search_dir), done, len(old_rates)))
    if diff:
        meta["config"] = cfg.model_dump(mode="json")
        meta.setdefault("forced_changes", []).append(diff)
        SearchFolder(search_dir).write_meta(meta)
        SearchFolder(search_dir).write_config(cfg)
        if store is not None:
            store.push()
    return run_locked(search_dir, cfg, localise_meta(meta, search_dir), address=address, view=view,
                      num_cpus=num_cpus)
