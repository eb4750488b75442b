"""Which Ray node this process runs on, and whether two nodes share CPU cores.

`this_node()` is what the ledger records for a trial and a latency figure: the Ray node id, the
node's IP and the hostname. `host_facts()` adds what decides whether a node has cores of its own:
the machine id and the CPUs this process may run on (its affinity, inherited from the raylet).
`shares_cores(node, others)` is the rule, a pure function over those facts:

    a node shares cores when another alive node runs on the same machine (same machine id; the
    hostname where either lacks one) and their CPU sets overlap (unknown CPU sets count as
    overlapping).

So the raylets of `s4op cluster local up` (one machine, no CPU pinning) share cores; a raylet
started under `taskset -c 0-3` next to one under `taskset -c 4-7` does not, and nodes on different
machines never do.
"""

from __future__ import annotations

import os
import socket
from typing import Iterable, Mapping

MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")


def this_node() -> dict:
    """{node_id, node_ip, hostname} of this process (node id and IP None outside Ray)."""
    node_id = node_ip = None
    try:
        import ray

        if ray.is_initialized():
            node_id = ray.get_runtime_context().get_node_id()
            node_ip = ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - outside Ray (tests, in-process measurement) there is no node
        pass
    return {"node_id": node_id, "node_ip": node_ip, "hostname": socket.gethostname()}


def machine_id() -> str | None:
    """The machine's id (systemd's /etc/machine-id), None where there is none."""
    for path in MACHINE_ID_FILES:
        try:
            with open(path) as handle:
                text = handle.read().strip()
        except OSError:
            continue
        if text:
            return text
    return None


def cpu_set() -> list[int] | None:
    """The CPUs this process may run on (sorted), None where the platform does not say."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def host_facts() -> dict:
    """`this_node()` plus {machine_id, cpus}: what `shares_cores` compares."""
    return {**this_node(), "machine_id": machine_id(), "cpus": cpu_set()}


def same_machine(a: Mapping, b: Mapping) -> bool:
    if a.get("machine_id") and b.get("machine_id"):
        return a["machine_id"] == b["machine_id"]
    return bool(a.get("hostname")) and a.get("hostname") == b.get("hostname")


def shares_cores(node: Mapping, others: Iterable[Mapping]) -> bool:
    """True when another node of `others` (host facts; `node` itself, by node id, is skipped) runs on
    the same machine as `node` with an overlapping CPU set (see the module docstring)."""
    for other in others:
        if other.get("node_id") is not None and other.get("node_id") == node.get("node_id"):
            continue
        if not same_machine(node, other):
            continue
        mine, theirs = node.get("cpus"), other.get("cpus")
        if mine is None or theirs is None or set(mine) & set(theirs):
            return True
    return False
