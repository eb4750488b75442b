"""`s4op search` step one: create the search folder (config, search.json, lock, ledger, MLflow store)."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from orchestrator.search import ledger
from orchestrator.search.folder import SearchFolder
from orchestrator.search.lock import acquire_lock
from orchestrator.search.provenance import provenance
from orchestrator.search.ray_runtime import is_embedded, start_ray
from orchestrator.tracking.client import Tracker, default_tracking_uri
from search_spaces.errors import SearchStateError


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def create_search(cfg, *, storage: str | os.PathLike = "s4op-runs", name: str | None = None,
                  tracking_uri: str | None = None, address: str | None = "local",
                  allow_local_storage: bool = False, work_dir: str | os.PathLike | None = None,
                  command: str | None = None):
    """Make `<storage>/<name>/` with config, search.json, lock, empty ledger and the MLflow store.

    Returns (search_dir, held lock). An existing search folder is refused (use `s4op resume`).
    An object-store `storage` (s3://, gs://): search_dir is the local working copy under `work_dir`
    (`storage/work_copy.py`), mirrored to `<storage>/<name>/`. `command`: the CLI line that made it
    (recorded with the s4op version and git commit, `provenance.py`).
    """
    name = name or cfg.name
    from orchestrator.search.baseline_stage import check_rates_reachable

    check_rates_reachable(cfg)  # before anything is written
    if not is_embedded(address):
        start_ray(address)  # the storage check needs the cluster's node count
    from cluster.storage import check_search_storage

    storage = check_search_storage(str(storage), address=address, allow_local_storage=allow_local_storage,
                                   n_nodes=None if not is_embedded(address) else 1)
    store = None
    if "://" in str(storage):  # object store: a local working copy mirrored to the URI
        from orchestrator.storage.work_copy import SearchStore, check_tracking_reachable

        check_tracking_reachable(str(storage), tracking_uri, address)
        store = SearchStore.create(str(storage), name, work_dir=work_dir)
        search_dir, lock = store.local, store.lock()
        search_dir.mkdir(parents=True, exist_ok=True)
    else:
        search_dir = Path(storage) / name
        search_dir.mkdir(parents=True, exist_ok=True)
        lock = acquire_lock(search_dir)
    folder = SearchFolder(search_dir)
    try:
        if folder.config_path.exists():
            raise SearchStateError(f"search folder {search_dir} already exists; continue it with "
                                   f"`s4op resume {search_dir}` or choose another --name")
        tracking_uri = tracking_uri or default_tracking_uri(search_dir)
        meta = {"name": name, "tracking_uri": tracking_uri, "experiment": name, "created_at": now(),
                "address": address, "host": socket.gethostname(), "config": cfg.model_dump(mode="json"),
                **provenance(command)}
        if store is not None:
            meta.update(search_uri=store.uri, tracking_in_work_copy=tracking_uri == default_tracking_uri(search_dir))
        folder.write_meta(meta)
        ledger.write_trials(search_dir, [])
        Tracker(tracking_uri).open_experiment(name, artifact_dir=folder.artifacts_dir)  # store made here first
        folder.write_config(cfg)  # last: marks the folder complete
        if store is not None:
            store.push()  # config.yaml last
    except BaseException:
        lock.release()
        raise
    return search_dir, lock
