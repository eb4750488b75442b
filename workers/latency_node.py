"""The node a latency is measured on: its facts, and whether the cluster has it.

A latency figure is only as meaningful as the machine it was taken on, so each figure records the
node's hostname, CPU model, architecture, the runtime's version, the Ray node id and IP
(`node_facts`). A search can ask for its latencies to be measured on a node offering a Ray custom
resource (`latency.node_resources`, e.g. a Raspberry Pi joined with
`ray start --address ... --resources '{"edge-rpi4": 1}'`); `missing_node_resources` says, from
`ray.cluster_resources()`, whether some node offers them (Ray itself would wait forever), and
`latency_node_cpus` how many CPUs the latency task reserves there (all of the node's: exclusive use).
Plain functions over plain data, except `node_facts`, which reads this machine.
"""

from __future__ import annotations

import platform
from typing import Iterable, Mapping

# Ray's own resources: not what a user names in latency.node_resources, left out of the message
_RAY_INTERNAL = ("memory", "object_store_memory")


def cpu_model(cpuinfo: str, fallback: str = "") -> str:
    """The CPU model named in a /proc/cpuinfo text: "model name" (x86, most arm64 kernels), else the
    board ("Model", e.g. "Raspberry Pi 4 Model B Rev 1.4") or "Hardware"/"Processor"/"cpu"; `fallback`."""
    found: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if sep and value and key not in found:
            found[key] = value
    for key in ("model name", "model", "hardware", "processor", "cpu"):
        value = found.get(key, "")
        if value and not value.isdigit():  # x86's "processor : 0" is an index, not a name
            return value
    return fallback


def node_facts(runtime: str) -> dict:
    """{node_hostname, node_cpu, node_arch, node_id, node_ip, runtime_version} of the machine running this."""
    from workers.node_identity import this_node

    try:
        with open("/proc/cpuinfo") as handle:
            cpuinfo = handle.read()
    except OSError:
        cpuinfo = ""
    node = this_node()  # the Ray node id and IP (None outside Ray)
    return {"node_hostname": node["hostname"], "node_cpu": cpu_model(cpuinfo, platform.processor()),
            "node_arch": platform.machine(), "node_id": node["node_id"], "node_ip": node["node_ip"],
            "runtime_version": runtime_version(runtime)}


def runtime_version(runtime: str) -> str:
    """The version of `runtime` ("torch" or "onnxruntime") as installed here."""
    module = __import__({"torch": "torch", "onnxruntime": "onnxruntime"}[runtime])
    return f"{runtime} {module.__version__}"


def missing_node_resources(wanted: Mapping[str, float], offered: Mapping[str, float]) -> str | None:
    """One line naming what no node offers and what the cluster does offer, or None if all is there.

    wanted: latency.node_resources; offered: `ray.cluster_resources()` (totals over alive nodes).
    """
    missing = {name: amount for name, amount in wanted.items() if float(offered.get(name, 0.0)) < float(amount)}
    if not missing:
        return None
    shown = ", ".join(f"{name}: {_num(amount)}" for name, amount in sorted(offered.items())
                      if name not in _RAY_INTERNAL and not name.startswith("node:"))
    asked = ", ".join(f"{name}: {_num(amount)}" for name, amount in missing.items())
    return (f"latency.node_resources: no Ray node offers {{{asked}}} (the cluster offers {{{shown}}}); join the "
            f"device with `ray start --address ... --resources '{{\"{next(iter(missing))}\": 1}}'` (cluster/README.md) "
            f"or remove latency.node_resources")


def latency_node_cpus(nodes: Iterable[Mapping], wanted: Mapping[str, float]) -> int:
    """CPUs the latency task reserves: all of the smallest alive node offering `wanted` (so it fits
    on any of them), or of the largest alive node when nothing is wanted. `nodes`: `ray.nodes()`."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    fitting = [r for r in alive if all(float(r.get(k, 0.0)) >= float(v) for k, v in wanted.items())]
    cpus = [int(r.get("CPU", 0)) for r in fitting]
    if not cpus:
        return 1
    return min(cpus) if wanted else max(max(cpus), 1)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
