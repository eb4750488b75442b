"""The alive nodes of the Ray cluster, each asked by a small task pinned to it.

`check_data_on_nodes` is the driver's data check before any trial: on every alive node that offers
CPUs (where a trial or the baseline can run) a task pinned by node id (Ray's public
`NodeAffinitySchedulingStrategy`, soft=False, 0 CPUs so a busy node answers too) runs
`workers.data.node_check.node_data_report`; a node that cannot read `task.data_dir`, or reads other
data than the driver, stops the search with one line naming it (`data_refusal`, exit 2).
`with_shared_cores` flags latency figures taken on a node that shares cores with another alive node
(`workers.node_identity.shares_cores`); the host facts it compares are gathered once per node id.
"""

from __future__ import annotations

from typing import Callable

from search_spaces.errors import DataError

_FACTS: dict[str, dict] = {}  # Ray node id -> host facts as that node reported them (they do not change)


def alive_nodes() -> list[dict]:
    """`ray.nodes()` entries of the alive nodes."""
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def on_each_node(fn: Callable[..., dict], *args, nodes: list[dict]) -> list[dict]:
    """`fn(*args)` run once on each of `nodes`, pinned there; a task that fails reports {error} for its node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, max_retries=0)(fn)
    refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=n["NodeID"], soft=False))
            .remote(*args) for n in nodes]
    reports = []
    for node, ref in zip(nodes, refs):
        try:
            reports.append(ray.get(ref))
        except ray.exceptions.RayError as exc:
            reports.append({"node_id": node["NodeID"], "node_ip": node.get("NodeManagerAddress"),
                            "hostname": node.get("NodeManagerHostname"),
                            "error": f"the check task failed there ({str(exc).strip().splitlines()[-1][:200]})"})
    return reports


def check_data_on_nodes(data_dir: str, expected: str) -> list[dict]:
    """Every CPU-offering alive node's data report (see module docstring); `DataError` naming the
    first node that cannot read `data_dir` or reads another fingerprint than `expected`. A node that
    left the cluster meanwhile is skipped (its trials will run elsewhere)."""
    from workers.data.node_check import data_refusal, node_data_report

    nodes = [n for n in alive_nodes() if float(n.get("Resources", {}).get("CPU", 0)) > 0]
    reports = [r for r in on_each_node(node_data_report, str(data_dir), expected, nodes=nodes) if not _gone(r)]
    _FACTS.update({r["node_id"]: r for r in reports if r.get("node_id") and not r.get("error")})
    message = data_refusal(reports, str(data_dir), expected)
    if message:
        raise DataError(message)
    return reports


def _gone(report: dict) -> bool:
    """A node that left the cluster while it was being asked (a killed or replaced worker whose death
    Ray had not yet noticed): not a node that cannot read the data."""
    if not report.get("error"):
        return False
    if "doesn't exist any more" in report["error"]:
        return True
    return report.get("node_id") not in {n["NodeID"] for n in alive_nodes()}


def alive_host_facts() -> list[dict]:
    """Host facts of every alive node (asked once per node id)."""
    from workers.node_identity import host_facts

    nodes = alive_nodes()
    missing = [n for n in nodes if n["NodeID"] not in _FACTS]
    for report in on_each_node(host_facts, nodes=missing) if missing else []:
        if report.get("node_id") and not report.get("error"):
            _FACTS[report["node_id"]] = report
    return [_FACTS[n["NodeID"]] for n in nodes if n["NodeID"] in _FACTS]


def with_shared_cores(measured: dict) -> dict:
    """`measured` ({id: {batch: latency figure}}) with `shared_cores` in every figure: True when its
    node (`node_id`) shares cores with another alive node; False without Ray or with one node."""
    from workers.node_identity import shares_cores

    ids = {fig.get("node_id") for by_batch in measured.values() for fig in by_batch.values()} - {None}
    facts: list[dict] = []
    try:
        import ray

        if ids and ray.is_initialized() and len(alive_nodes()) > 1:
            facts = alive_host_facts()
    except ImportError:  # pragma: no cover
        pass
    by_id = {f["node_id"]: f for f in facts}
    shared = {node_id: node_id in by_id and shares_cores(by_id[node_id], facts) for node_id in ids}
    return {key: {batch: {**fig, "shared_cores": shared.get(fig.get("node_id"), False)}
                  for batch, fig in by_batch.items()} for key, by_batch in measured.items()}
