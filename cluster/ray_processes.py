"""What each process of a local Ray node is (raylet, GCS, dashboard, agents, workers) and where it
listens: read from /proc and psutil, for `s4op cluster local status` and the socket check of
cluster/README.md's table (tests/test_cluster_local_live.py)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

# the kinds, in the order `status` prints them; cluster/README.md's socket table uses these names
KINDS = ("raylet", "gcs_server", "dashboard", "client server", "monitor", "log monitor",
         "DashboardAgent", "RuntimeEnvAgent", "worker", "dashboard module", "ray start")
LOOPBACK, NODE_IP, ALL_INTERFACES = "127.0.0.1", "node IP", "all interfaces"

# a substring of the command line -> the kind (first match wins; `ray::` titles are handled apart)
_BY_COMMAND = (
    ("ray/core/src/ray/raylet/raylet", "raylet"),
    ("ray/core/src/ray/gcs/gcs_server", "gcs_server"),
    ("ray/dashboard/dashboard.py", "dashboard"),
    ("ray-dashboard-", "dashboard module"),
    ("multiprocessing", "dashboard module"),  # the dashboard's forkserver and resource tracker
    ("ray.util.client.server", "client server"),
    ("autoscaler/_private/monitor.py", "monitor"),
    ("_private/log_monitor.py", "log monitor"),
    ("_private/workers/default_worker.py", "worker"),
    ("_private/workers/setup_worker.py", "worker"),
    (" start ", "ray start"),
)


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def process_kind(pid: int) -> str | None:
    """The kind of a Ray node's process (one of KINDS), `other: <command>`, or None once it is gone."""
    cmd = _cmdline(pid)
    if not cmd:
        return None
    title = cmd.split()[0]
    if title.startswith("ray::"):  # setproctitle: agents by name, tasks and actors are workers
        name = title.removeprefix("ray::")
        return name if name in ("DashboardAgent", "RuntimeEnvAgent") else "worker"
    for needle, kind in _BY_COMMAND:
        if needle in f" {cmd} ":
            return kind
    return f"other: {title.rsplit('/', 1)[-1]}"


def pids_by_kind(pids: list[int]) -> dict[str, list[int]]:
    """{kind: sorted pids} for the live ones among `pids`, kinds in KINDS order, others last."""
    found: dict[str, list[int]] = {}
    for pid in sorted(pids):
        kind = process_kind(pid)
        if kind is not None:
            found.setdefault(kind, []).append(pid)
    order = {kind: i for i, kind in enumerate(KINDS)}
    return dict(sorted(found.items(), key=lambda item: (order.get(item[0], len(KINDS)), item[0])))


def bind_scope(ip: str) -> str:
    """Who can reach a socket bound to `ip`: LOOPBACK, ALL_INTERFACES (0.0.0.0, ::) or NODE_IP
    (one address of this machine, reachable from its networks)."""
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_unspecified:
        return ALL_INTERFACES
    return LOOPBACK if addr.is_loopback else NODE_IP


@dataclass(frozen=True)
class Listener:
    """One listening TCP socket of a node's process."""

    pid: int
    kind: str
    ip: str
    port: int

    @property
    def scope(self) -> str:
        return bind_scope(self.ip)


def listening_sockets(pids: list[int]) -> list[Listener]:
    """The TCP sockets the given processes listen on (processes gone meanwhile are skipped)."""
    import psutil  # a Ray dependency; only needed here

    found = []
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except psutil.Error:
            continue
        kind = process_kind(pid)
        found += [Listener(pid, kind or "gone", c.laddr.ip, c.laddr.port)
                  for c in conns if c.status == psutil.CONN_LISTEN]
    return sorted(found, key=lambda s: (s.pid, s.port, s.ip))


def open_paths(pids: list[int]) -> set[str]:
    """Files, unix sockets and working directories the given processes hold open (by path)."""
    import psutil

    paths: set[str] = set()
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            paths.update(f.path for f in proc.open_files())
            paths.update(c.laddr for c in proc.net_connections(kind="unix") if c.laddr)
            paths.add(proc.cwd())
        except psutil.Error:
            continue
    return paths
