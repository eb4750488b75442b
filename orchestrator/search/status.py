"""`s4op status`: where a search stands, read from the ledger and the folder (no Ray, no MLflow).

A search on an object store (`s3://...`) is read from its local working copy, refreshed from the
store first (`orchestrator/remote.py::open_search`); disk use and the lock are the store's.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from orchestrator.search import ledger
from orchestrator.search.folder import CONFIG_NAME, META_NAME, SearchFolder, read_meta
from orchestrator.storage.disk import disk_usage, folder_bytes
from orchestrator.search.lock import pid_alive, read_lock
from orchestrator.storage.work_copy import localise_meta
from search_spaces.errors import SearchStateError


_STAGE_FIELDS = ("stage", "rate", "status", "n_trials", "n_failed", "best_trial_id", "best_seed", "val_metric",
                 "test_metric", "latency_p50_ms", "latency_p90_ms", "speedup_pct", "params", "param_reduction_pct",
                 "checkpoint",
                 "metric_name")


def read_starts(search_dir: Path, k: int) -> list[dict]:
    """Stage k's `starts.log`: one dict per trial start, in order (a torn last line skipped)."""
    path = SearchFolder(search_dir).starts_log(k)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def search_status(search_dir: str | os.PathLike, *, work_dir: str | os.PathLike | None = None) -> dict:
    """Plain-data status: stages done, trials, best so far, what is left, lock, disk used.

    `search_dir`: a search folder or an s3:// / gs:// URI (its working copy under `work_dir`).
    """
    from orchestrator.storage.work_copy import open_search
    from search_spaces.config import load_search_config

    search_dir, store = open_search(search_dir, work_dir=work_dir, what="status")
    if not (search_dir / META_NAME).exists() or not (search_dir / CONFIG_NAME).exists():
        raise SearchStateError(f"{search_dir} is not a search folder (no {META_NAME} / {CONFIG_NAME}); "
                               "expected <storage>/<name> made by `s4op search`")
    meta = read_meta(search_dir)
    cfg = load_search_config(search_dir / CONFIG_NAME)
    stages = ledger.stage_rows(search_dir)
    trials = ledger.trial_rows(search_dir)
    rows = [{k: getattr(r, k) for k in _STAGE_FIELDS} for r in stages]
    done = {r.stage for r in stages if r.status == "completed"}
    rates = [float(r) for r in cfg.search.rates]
    left = [{"stage": k, "rate": r} for k, r in enumerate(rates, start=1) if k not in done]
    answer = None
    if cfg.search.target is not None:  # only the next stage is known: later ones depend on its result
        from orchestrator.search.target_plan import planned_stage, target_answer

        step = planned_stage(cfg, search_dir) if 0 in done else None
        left = [{"stage": step.stage, "rate": step.rate}] if step is not None else ([] if 0 in done else left[:1])
        answer = target_answer(cfg, search_dir)
    current = None
    if left:
        k = left[0]["stage"]
        starts = read_starts(search_dir, k)
        if starts:
            current = {"stage": k, "rate": left[0]["rate"], "trial_starts": len(starts),
                       "trials_started": sorted({s["trial"] for s in starts}),
                       "restarts": sum(bool(s.get("resumed")) for s in starts)}
    best = None
    rated = [r for r in rows if r["status"] == "completed" and r["stage"] > 0]
    if rated:
        best = max(rated, key=lambda r: r["stage"])
    if store is not None:
        from orchestrator.search.lock import read_uri_lock
        from workers.objectstore import join_uri

        owner = read_uri_lock(join_uri(store.uri, "search.lock"))
    else:
        owner = read_lock(search_dir)
    here = bool(owner) and owner.get("host") in (None, socket.gethostname())
    running = bool(owner) and (pid_alive(int(owner.get("pid", -1))) if here else None)  # None: cannot tell
    n_trials = int(cfg.search.algorithm.samples) if cfg.search.algorithm.kind != "grid" else len(cfg.seed_list)
    usage = store.disk_usage() if store is not None else disk_usage(search_dir)
    return {
        "search": meta.get("name"), "search_dir": store.uri if store is not None else str(search_dir),
        "work_copy": str(search_dir) if store is not None else None,
        "tracking_uri": localise_meta(meta, search_dir).get("tracking_uri"),
        "task": cfg.task.name, "model": cfg.model.kind, "mode": cfg.search.mode,
        "trials_per_stage": n_trials, "stages": rows,
        "trials": {"completed": sum(t.status == "completed" for t in trials),
                   "failed": sum(t.status == "failed" for t in trials),
                   "stopped": sum(t.status == "stopped" for t in trials)},
        "target": None if answer is None else {"answer": answer.text, "stage": answer.stage},
        "best_so_far": best, "left": left, "in_progress": current,
        "complete": not left and 0 in done,
        "driver": {"running": running, **(owner or {})} if owner else {"running": False},
        "disk_bytes": usage["total"] if store is not None else folder_bytes(search_dir),
        "disk": usage,
        "latency_protocol": _protocol(cfg, trials),
        "nodes": trials_per_node(trials),
        "latency_shared_cores": any(bool(r.latency_shared_cores) for r in [*stages, *trials]),
    }


def trials_per_node(trials) -> list[dict]:
    """{hostname, ip, node_id, trials, completed, failed, stopped} per node the trials ran on: by Ray
    node id (the nodes of a local cluster share hostname and IP), else by IP and hostname (a trial
    without its final result); one that failed before reporting anything counts under hostname None."""
    nodes: dict[tuple, dict] = {}
    for t in trials:
        key = (t.node_id,) if t.node_id else (None, t.node_ip, t.node)
        entry = nodes.setdefault(key, {"hostname": t.node, "ip": t.node_ip, "node_id": t.node_id,
                                       "trials": 0, "completed": 0, "failed": 0, "stopped": 0})
        entry["trials"] += 1
        if t.status in ("completed", "failed", "stopped"):
            entry[t.status] += 1
    return sorted(nodes.values(), key=lambda e: (e["hostname"] is None, str(e["hostname"]), str(e["ip"])))


def node_table(nodes: list[dict]) -> str:
    """The trials-per-node table of `s4op status`."""
    head = ("node", "ip", "node id", "trials", "completed", "failed", "stopped")
    rows = [(n["hostname"] or "-", n["ip"] or "-", (n["node_id"] or "-")[:8], *(str(n[k]) for k in head[3:]))
            for n in nodes]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows])


def _protocol(cfg, trials) -> str:
    """The latency protocol line: the config's section, the length the trials were timed at."""
    from orchestrator.latency_noise import protocol_from_config

    lengths = [t.latency_length for t in trials if getattr(t, "latency_length", None) is not None]
    return protocol_from_config(cfg.latency, max(lengths) if lengths else None)


def format_status(st: dict) -> str:
    """Human-readable status lines."""
    from orchestrator.search.view import summary_table

    lines = [f"search {st['search']} ({st['task']}, {st['model']}, {st['mode']}) in {st['search_dir']}"]
    running = st["driver"]["running"]
    state = "complete" if st["complete"] else ("running" if running else "stopped")
    if running is None and not st["complete"]:
        state = f"locked by driver PID {st['driver'].get('pid')} on host {st['driver'].get('host')} (another host: " \
                "running, or gone; `s4op resume --break-lock` takes over a dead host's lock)"
    elif st["driver"].get("pid") and running:
        state += f" (driver PID {st['driver']['pid']} on {st['driver'].get('host')})"
    stopped = st["trials"].get("stopped")
    lines.append(f"state: {state}; trials completed {st['trials']['completed']}, failed {st['trials']['failed']}"
                 f"{f', stopped early {stopped}' if stopped else ''}; {st['trials_per_stage']} trials per stage")
    if st["stages"]:
        stages = [ledger.stage_row(r) for r in st["stages"]]
        names = [r.metric_name for r in stages if r.metric_name]
        lines.append(summary_table(stages, metric_name=names[0] if names else "metric",
                                   protocol=st.get("latency_protocol")))
    if st.get("latency_shared_cores"):
        from orchestrator.latency_noise import SHARED_CORES_NOTE

        lines.append(SHARED_CORES_NOTE)
    if st.get("nodes"):
        lines.append("trials per node:\n" + node_table(st["nodes"]))
    if st["in_progress"]:
        p = st["in_progress"]
        lines.append(f"in progress: stage {p['stage']} (rate {p['rate']:g}): {len(p['trials_started'])} trials started, "
                     f"{p['restarts']} restarts")
    if st.get("target"):
        lines.append(f"target{'' if st['complete'] else ' (so far)'}: {st['target']['answer']}")
    if st["left"]:
        lines.append(("next: " if st.get("target") else "left: ") + ", ".join(f"stage {x['stage']} (rate {x['rate']:g})" for x in st["left"]))
    parts = st.get("disk") or {}
    detail = (f" (checkpoints {parts['checkpoints'] / 1e6:.1f} MB, Tune state {parts['tune'] / 1e6:.1f} MB, "
              f"MLflow {parts['mlflow'] / 1e6:.1f} MB)") if parts else ""
    lines.append(f"disk used: {st['disk_bytes'] / 1e6:.1f} MB{detail}; MLflow: {st['tracking_uri']}")
    if st.get("work_copy"):
        lines.append(f"local working copy: {st['work_copy']}")
    return "\n".join(lines)
