"""`s4op resume`: continue a search where it stopped.

Completed stages (ledger) are skipped, the interrupted stage is restored by the driver with
`Tuner.restore(resume_errored=True)`. The config must match the one the search started with
(recorded in search.json): a hand-edited config.yaml, `--config` or `--set` that changes anything
is refused with the list of differences, unless `--force` (then the new config is recorded).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from orchestrator.driver import CONFIG_NAME, META_NAME, _write_text_atomic, read_meta, run_locked
from orchestrator.lock import acquire_lock
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
        raise SearchStateError(f"config of search {search_dir} changed since it started ({'; '.join(diff)}); "
                               "resume with the original config, or pass --force to continue with the new one")
    if diff:
        log(f"s4op: --force: continuing {search_dir} with a changed config: " + "; ".join(diff))
    return new, diff


def resume_search(search_dir: str | os.PathLike, *, config: str | None = None, overrides=(), force: bool = False,
                  address: str | None = "local", view=None, num_cpus: int | None = None, log=print) -> Path:
    """Continue the search in `search_dir` to its end (lock held throughout)."""
    from search_spaces.config import dump_config

    search_dir = Path(search_dir).resolve()
    if not (search_dir / META_NAME).exists():
        raise SearchStateError(f"{search_dir} is not a search folder ({META_NAME} not found); "
                               "expected <storage>/<name> made by `s4op search`")
    lock = acquire_lock(search_dir)
    try:
        cfg, diff = check_config(search_dir, config=config, overrides=overrides, force=force, log=log)
        meta = read_meta(search_dir)
        if diff:
            meta["config"] = cfg.model_dump(mode="json")
            meta.setdefault("forced_changes", []).append(diff)
            _write_text_atomic(search_dir / META_NAME, json.dumps(meta, indent=1))
            _write_text_atomic(search_dir / CONFIG_NAME, dump_config(cfg))
        return run_locked(search_dir, cfg, meta, address=address, view=view, num_cpus=num_cpus)
    finally:
        lock.release()
