"""`s4op sweep status DIR`: where each search and each shared baseline of a sweep stands (no Ray, no
MLflow; read from the sweep folder and each search's ledger through `search/status.py`)."""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.sweep.folder import SweepFolder


def _baseline(folder: SweepFolder, key: str, users: list[str]) -> dict:
    from orchestrator.search.baseline_remote import epoch_lines

    lines = epoch_lines(folder.baseline_state(key))
    trained = (folder.baseline_checkpoint(key) / "model.json").is_file()
    return {"key": key, "trained": trained, "epochs_done": len(lines), "searches": users,
            "checkpoint": str(folder.baseline_checkpoint(key))}


def _search(folder: SweepFolder, entry: dict) -> dict:
    from orchestrator.search.folder import SearchFolder
    from orchestrator.search.status import search_status

    search_dir = folder.search_dir(entry["name"])
    out = {"name": entry["name"], "baseline_key": entry.get("key"), "search_dir": str(search_dir)}
    if not SearchFolder(search_dir).is_search():
        return {**out, "state": "not started", "stages_done": 0, "stages_planned": None, "best_so_far": None}
    st = search_status(search_dir)
    done = sum(r["status"] == "completed" for r in st["stages"])
    running = st["driver"].get("running")
    state = "complete" if st["complete"] else ("running" if running else "stopped")
    current = st["in_progress"]
    return {**out, "state": state, "stages_done": done, "stages_planned": done + len(st["left"]),
            "in_progress": None if current is None else f"stage {current['stage']} (rate {current['rate']:g})",
            "best_so_far": st["best_so_far"], "tracking_uri": st["tracking_uri"]}


def sweep_status(sweep_dir: str | os.PathLike) -> dict:
    """Plain data: the sweep's searches (state, stages done, best so far) and its shared baselines."""
    from orchestrator.search.lock import pid_alive, read_lock

    folder = SweepFolder(Path(sweep_dir).resolve())
    meta = folder.read_meta()
    searches = [_search(folder, s) for s in meta["searches"]]
    keys = sorted({s["key"] for s in meta["searches"] if s.get("key")})
    baselines = [_baseline(folder, k, [s["name"] for s in meta["searches"] if s.get("key") == k]) for k in keys]
    owner = read_lock(folder.root)
    return {"sweep": meta["name"], "sweep_dir": str(folder.root), "searches": searches, "baselines": baselines,
            "complete": all(s["state"] == "complete" for s in searches),
            "driver": {"running": bool(owner) and pid_alive(int(owner.get("pid", -1))), **(owner or {})}}


def format_sweep_status(st: dict) -> str:
    state = "complete" if st["complete"] else ("running" if st["driver"]["running"] else "stopped")
    if st["driver"]["running"]:
        state += f" (sweep driver PID {st['driver'].get('pid')})"
    lines = [f"sweep {st['sweep']} in {st['sweep_dir']}: {state}"]
    for b in st["baselines"]:
        what = "trained" if b["trained"] else f"{b['epochs_done']} epochs so far"
        lines.append(f"baseline {b['key']}: {what}, shared by {', '.join(b['searches'])}")
    width = max(len(s["name"]) for s in st["searches"])
    for s in st["searches"]:
        stages = f"{s['stages_done']}/{s['stages_planned']} stages" if s["stages_planned"] else "0 stages"
        best = s.get("best_so_far")
        best_text = (f"; best so far: rate {best['rate']:g}, val {best['metric_name']} {best['val_metric']:.4f}"
                     if best else "")
        where = f", at {s['in_progress']}" if s.get("in_progress") and s["state"] != "complete" else ""
        lines.append(f"  {s['name']:<{width}}  {s['state']:<11} {stages}{where}{best_text}")
    if not st["complete"] and not st["driver"]["running"]:
        lines.append(f"continue with: s4op sweep resume {st['sweep_dir']}")
    return "\n".join(lines)
