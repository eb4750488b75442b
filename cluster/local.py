"""A multi-node Ray cluster on this machine, for tests and for trying cluster runs on a laptop.

`start_local_cluster` launches one head and N worker nodes with `ray start --block`, each in its
own process session (so the node and every process it spawns share one session id), and records
the session ids in a JSON state file. `stop_local_cluster` ends exactly those sessions: SIGTERM to
each node's process group, then SIGKILL to anything still in the session. Nothing else on the
machine is touched (never `ray stop`, which kills every Ray process of every user).

Ray 2.60 authenticates cluster connections with a token. Each local cluster gets its own random
token, written 0600 next to the state file and handed to every node and client through
`RAY_AUTH_MODE=token` and `RAY_AUTH_TOKEN_PATH` (never `~/.ray/auth_token`, which other clusters
on the machine may use). Only the dashboard can be bound to 127.0.0.1 with Ray's flags: `ray start`
rewrites `--node-ip-address 127.0.0.1` to the machine's address and the GCS, raylets and workers
listen on all interfaces (the table in cluster/README.md, checked by tests/test_cluster_local_live.py),
so the token is what keeps the cluster private; `client_env(state)` gives the variables a client
(`s4op search --address ...`, `ray job submit`) needs.

Every node runs with the venv's `bin/` first on PATH (jobs find `s4op` and this `python`) and
with TMPDIR inside the cluster's temp dir, so what Ray's processes leave in a temp folder
(multiprocessing's `pymp-*` listener sockets) goes when `down` removes that dir.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from search_spaces.errors import ConfigError, SearchStateError

STATE_VERSION = 1
NODE_IP = "127.0.0.1"


@dataclass
class LocalNode:
    """One `ray start --block` process: its pid is also its session and process-group id."""

    role: str  # "head" | "worker"
    index: int  # 0 for the head, 1..N for workers
    pid: int
    cpus: float
    log: str
    started_at: float
    start_ticks: int | None = None  # kernel start time of the pid: guards against PID reuse
    resources: dict[str, float] = field(default_factory=dict)  # custom resources (a latency node's)
    gpus: float = 0.0  # GPUs the node declares (logical ones on a machine without)


@dataclass
class LocalClusterState:
    """What `s4op cluster local up` started, as recorded in the state file."""

    address: str  # HOST:PORT of the head's GCS
    port: int
    token_path: str
    temp_dir: str
    nodes: list[LocalNode] = field(default_factory=list)
    dashboard_url: str | None = None
    created_at: float = 0.0
    version: int = STATE_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "state") -> "LocalClusterState":
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise SearchStateError(
                f"{where}: not a version-{STATE_VERSION} local cluster state file"
            )
        try:
            nodes = [LocalNode(**node) for node in data["nodes"]]
            rest = {k: v for k, v in data.items() if k != "nodes"}
            return cls(nodes=nodes, **rest)
        except (KeyError, TypeError) as exc:
            raise SearchStateError(f"{where}: malformed local cluster state ({exc})") from None

    @property
    def workers(self) -> list[LocalNode]:
        return [node for node in self.nodes if node.role == "worker"]


def default_state_path() -> Path:
    """`$S4OP_HOME/local-cluster.json`, default `~/.s4op/local-cluster.json`."""
    home = os.environ.get("S4OP_HOME") or os.path.join(os.path.expanduser("~"), ".s4op")
    return Path(home) / "local-cluster.json"


def save_state(state: LocalClusterState, path: str | Path) -> Path:
    """Write the state file atomically (temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(state.to_dict(), fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load_state(path: str | Path) -> LocalClusterState | None:
    """The recorded cluster, or None when no state file exists."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SearchStateError(f"{path}: unreadable local cluster state ({exc})") from None
    return LocalClusterState.from_dict(data, where=str(path))


# --- processes ---------------------------------------------------------------------------


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
        return stat[stat.rindex(")") + 2] in "ZX"
    except (OSError, ValueError, IndexError):
        return False


def session_processes(sid: int) -> list[int]:
    """Live (non-zombie) pids whose session id is `sid`: a node and everything it spawned."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            if os.getsid(pid) == sid and not _is_zombie(pid):
                pids.append(pid)
        except OSError:
            continue
    return sorted(pids)


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or None."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def node_processes(node: LocalNode) -> list[int]:
    """Live pids of the node's session. Linux does not reuse a PID while it names a live session,
    so members of session `node.pid` are ours, unless the leader itself is a different process
    that got the recorded PID after all of ours had gone (its start time gives it away)."""
    leader = start_ticks(node.pid)
    if leader is not None and node.start_ticks is not None and leader != node.start_ticks:
        return []
    return session_processes(node.pid)


def node_alive(node: LocalNode) -> bool:
    """True while any process of the node's session is running."""
    return bool(node_processes(node))


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    except OSError:
        pass


def kill_node(node: LocalNode, sig: int = signal.SIGKILL, wait_s: float = 5.0) -> list[int]:
    """Send `sig` to every process of the node's session (a hard node loss with SIGKILL) and wait
    up to `wait_s` for them to be gone. Returns the pids signalled."""
    hit = node_processes(node)
    for pid in hit:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + wait_s
    while True:
        _reap(node.pid)
        if not node_processes(node) or time.monotonic() >= deadline:
            return hit
        time.sleep(0.02)


def stop_node(node: LocalNode, grace_s: float = 3.0) -> list[int]:
    """SIGTERM the node's process group, wait up to `grace_s`, then SIGKILL what is left of its
    session. Returns the pids that were running when the stop began."""
    hit = node_processes(node)
    if not hit:
        _reap(node.pid)
        return []
    try:
        os.killpg(node.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        _reap(node.pid)
        if not node_processes(node):
            return hit
        time.sleep(0.1)
    kill_node(node, signal.SIGKILL)
    return hit


# --- starting ----------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nobody listens on right now (bind to 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def client_env(state: LocalClusterState) -> dict[str, str]:
    """Environment a client needs to connect: address and the cluster's auth token, and with the
    dashboard on, the Jobs API address `ray job submit` reads (RAY_API_SERVER_ADDRESS)."""
    env = {
        "RAY_ADDRESS": state.address,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": state.token_path,
    }
    if state.dashboard_url:
        env["RAY_API_SERVER_ADDRESS"] = state.dashboard_url
    return env


def node_tmp_dir(state: LocalClusterState) -> Path:
    """The TMPDIR of every node: inside Ray's temp dir, so `down` removes what lands there."""
    return Path(state.temp_dir) / "tmp"


def _node_env(state: LocalClusterState, env: dict[str, str] | None) -> dict[str, str]:
    """This process's environment for a node: the cluster's token, the venv's bin first on PATH
    (a job's `s4op` and `python` are the ones the nodes run), TMPDIR inside the cluster, `env` last."""
    node_env = dict(os.environ)
    for var in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_API_SERVER_ADDRESS"):
        node_env.pop(var, None)
    tmp = node_tmp_dir(state)
    tmp.mkdir(parents=True, exist_ok=True)
    venv_bin = str(Path(sys.executable).parent)
    node_env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=state.token_path,
        RAY_USAGE_STATS_ENABLED="0",
        TMPDIR=str(tmp),
        PATH=os.pathsep.join([venv_bin, *(p for p in node_env.get("PATH", "").split(os.pathsep)
                                          if p and p != venv_bin)]),
    )
    node_env.update(env or {})
    return node_env


def _node_args(object_store_mb: int) -> list[str]:
    """Flags every node gets. Ray 2.60 rewrites `--node-ip-address 127.0.0.1` to the machine's
    address (`resolve_ip_for_localhost`); it is passed so the nodes agree on one host."""
    return [
        "--node-ip-address", NODE_IP,
        "--object-store-memory", str(object_store_mb * 1024 * 1024),
        "--dashboard-agent-listen-port", str(free_port()),
        "--disable-usage-stats",
        "--block",
    ]


def _head_metric_ports() -> dict[str, str]:
    """Free ports for the head's autoscaler (monitor) and dashboard metrics, which Ray otherwise
    binds to fixed ports (44217, 44227) read from these variables: a second cluster on the same
    machine (two test workers, two users) would find them taken."""
    return {"AUTOSCALER_METRIC_PORT": str(free_port()), "DASHBOARD_METRIC_PORT": str(free_port())}


def _ray_executable() -> str:
    here = Path(sys.executable).parent / "ray"
    if here.exists():
        return str(here)
    found = shutil.which("ray")
    if found is None:
        raise ConfigError("the `ray` command was not found next to python or on PATH")
    return found


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own session + process group: stopped as one by id
            close_fds=True,
        )


def _wait_started(proc: subprocess.Popen, log: Path, deadline: float) -> None:
    """Block until `ray start` logs that the node runs; raise if it exits or times out."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            raise SearchStateError(
                f"ray start exited with code {proc.returncode} (log {log}: {' '.join(tail)})"
            )
        if log.exists() and "Ray runtime started" in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise SearchStateError(f"ray start did not report the node running in time (log {log})")


def start_local_cluster(
    workers: int,
    *,
    cpus_per_worker: float = 1,
    head_cpus: float = 0,
    gpus_per_worker: float = 0,
    state_path: str | Path | None = None,
    port: int | None = None,
    object_store_mb: int = 128,
    dashboard: bool = False,
    env: dict[str, str] | None = None,
    timeout_s: float = 180.0,
    latency_node: str | None = None,
) -> LocalClusterState:
    """Start a head and `workers` worker nodes on this machine; record them in `state_path`.

    `head_cpus` defaults to 0 so trials run on worker nodes only (the head hosts the driver's
    actors); Ray accepts more declared CPUs (and GPUs) than the machine has. `env` adds variables
    to every node (e.g. `RAY_health_check_period_ms` for faster node-loss detection).
    `latency_node` names a custom resource: one extra worker with 1 CPU and {latency_node: 1} then
    stands in for a device joined as a latency node (`latency.node_resources`). Refuses when the
    state file already records a running cluster. On any failure everything started is stopped.
    """
    if workers < 0:
        raise ConfigError(f"--workers {workers} is negative; expected 0 or more worker nodes")
    if head_cpus < 0:
        raise ConfigError(f"--head-cpus {head_cpus} must be >= 0")
    check_node_size(cpus_per_worker, gpus_per_worker, "--cpus-per-worker", "--gpus-per-worker")
    plan = [(cpus_per_worker, gpus_per_worker, {}) for _ in range(workers)]  # (CPUs, GPUs, custom)
    plan += [(1.0, 0.0, resources) for resources in latency_node_resources(latency_node)]
    state_path = Path(state_path) if state_path is not None else default_state_path()
    old = load_state(state_path)
    if old is not None and any(node_alive(n) for n in old.nodes):
        raise SearchStateError(
            f"{state_path} records a running local cluster at {old.address}; "
            "run `s4op cluster local down` first or pass another --state"
        )

    port = port or free_port()
    run_dir = state_path.parent / f"local-cluster-{port}"
    run_dir.mkdir(parents=True, exist_ok=True)
    token_path = run_dir / "auth_token"
    fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    dashboard_port = free_port()
    state = LocalClusterState(
        address=f"{NODE_IP}:{port}",
        port=port,
        token_path=str(token_path),
        temp_dir=f"/tmp/s4op-ray-{port}",  # short: Ray's unix sockets live under it
        dashboard_url=f"http://{NODE_IP}:{dashboard_port}" if dashboard else None,
        created_at=time.time(),
    )
    deadline = time.monotonic() + timeout_s
    try:
        node_env = _node_env(state, env)
        head_log = run_dir / "head.log"
        head = _spawn(
            [_ray_executable(), "start", "--head", "--port", str(port), "--num-cpus", _num(head_cpus),
             "--num-gpus", "0", "--temp-dir", state.temp_dir,
             "--include-dashboard", "true" if dashboard else "false",
             "--dashboard-host", NODE_IP, "--dashboard-port", str(dashboard_port),
             "--ray-client-server-port", str(free_port()), *_node_args(object_store_mb)],
            {**node_env, **_head_metric_ports()}, head_log,
        )
        state.nodes.append(LocalNode("head", 0, head.pid, head_cpus, str(head_log), time.time(),
                                     start_ticks(head.pid)))
        save_state(state, state_path)  # recorded before waiting: `down` can always find it
        _wait_started(head, head_log, deadline)
        for cpus, gpus, resources in plan:
            # one at a time: a raylet must register with the GCS within Ray's fixed 30 s, which
            # several nodes starting at once on a loaded machine can miss; such a node is retried
            for attempt in (1, 2):
                try:
                    _start_worker(state, state_path, cpus, gpus, resources, node_env, deadline,
                                  object_store_mb)
                    break
                except SearchStateError:
                    if attempt == 2 or time.monotonic() > deadline:
                        raise
    except BaseException:
        for node in reversed(state.nodes):
            stop_node(node, grace_s=0.5)
        _cleanup_files(state, state_path, keep_logs=True)  # node logs say why
        raise
    return state


def _start_worker(
    state: LocalClusterState,
    state_path: Path,
    cpus: float,
    gpus: float,
    resources: dict[str, float],
    node_env: dict[str, str],
    deadline: float,
    object_store_mb: int = 128,
) -> LocalNode:
    """Start one worker node, record it, wait until it runs; on failure stop and unrecord it."""
    index = max(node.index for node in state.nodes) + 1
    log = Path(state.token_path).parent / f"worker-{index}.log"
    proc = _spawn(
        [_ray_executable(), "start", "--address", state.address, "--num-cpus", _num(cpus),
         "--num-gpus", _num(gpus), *(["--resources", json.dumps(resources)] if resources else []),
         *_node_args(object_store_mb)],
        node_env, log,
    )
    node = LocalNode("worker", index, proc.pid, cpus, str(log), time.time(), start_ticks(proc.pid),
                     dict(resources), gpus)
    state.nodes.append(node)
    save_state(state, state_path)
    try:
        _wait_started(proc, log, deadline)
    except SearchStateError:
        stop_node(node, grace_s=0.5)
        proc.wait(timeout=10)
        state.nodes.remove(node)
        save_state(state, state_path)
        raise
    return node


def check_node_size(cpus: float, gpus: float, cpus_flag: str = "--cpus", gpus_flag: str = "--gpus") -> None:
    """`ConfigError` naming the flag unless a worker declares > 0 CPUs and a whole number of GPUs
    >= 0 (`ray start --num-gpus` takes an integer; on a machine without GPUs they are logical)."""
    if cpus <= 0:
        raise ConfigError(f"{cpus_flag} {cpus:g} must be > 0")
    if gpus < 0 or not float(gpus).is_integer():
        raise ConfigError(f"{gpus_flag} {gpus:g}: expected a whole number of GPUs >= 0")


def latency_node_resources(name: str | None) -> list[dict[str, float]]:
    """The custom resources of the latency node to add: [] or [{name: 1}]; `ConfigError` on a bad name."""
    if name is None:
        return []
    check_resource_name(name, f"--latency-node {name!r}")
    return [{name: 1.0}]


def check_resource_name(name: str, where: str) -> None:
    """`ConfigError` starting with `where` unless `name` can be a custom Ray resource."""
    if not name.strip() or name in ("CPU", "GPU", "memory", "object_store_memory") or any(
            c in name for c in " ,:\"'{}"):
        raise ConfigError(f"{where}: expected a custom resource name such as edge-rpi4, got {name!r}")


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def parse_resources(text: str | None) -> dict[str, float]:
    """`--resources '{"edge-rpi4": 1}'` as a dict; `ConfigError` naming the flag on anything else."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--resources {text!r}: not JSON ({exc.msg})") from None
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
            for k, v in value.items()):
        raise ConfigError(f"--resources {text!r}: expected a JSON object of names to amounts >= 0")
    for name in value:
        check_resource_name(name, f"--resources {text!r}")
    return {name: float(amount) for name, amount in value.items()}


def add_worker_node(
    state_path: str | Path | None = None,
    *,
    cpus: float = 1,
    gpus: float = 0,
    resources: dict[str, float] | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 60.0,
    object_store_mb: int = 128,
) -> LocalNode:
    """Start one more worker node for the recorded cluster (e.g. to replace a lost one)."""
    check_node_size(cpus, gpus)
    state_path = Path(state_path) if state_path is not None else default_state_path()
    state = load_state(state_path)
    if state is None:
        raise SearchStateError(f"{state_path}: no local cluster recorded; run `s4op cluster local up`")
    head = next((n for n in state.nodes if n.role == "head"), None)
    if head is None or not node_alive(head):
        raise SearchStateError(f"{state_path}: the head of {state.address} is not running; "
                               "run `s4op cluster local down`, then `up`")
    return _start_worker(state, state_path, cpus, gpus, resources or {}, _node_env(state, env),
                         time.monotonic() + timeout_s, object_store_mb)


def remove_worker_node(state_path: str | Path | None, which: str, *, grace_s: float = 3.0) -> tuple[LocalNode, list[int]]:
    """Stop the worker `which` (its index, `worker-N`, or its node pid) by its process session and
    drop it from the state file. Returns the node and the pids that were running."""
    state_path = Path(state_path) if state_path is not None else default_state_path()
    state = load_state(state_path)
    if state is None:
        raise SearchStateError(f"{state_path}: no local cluster recorded")
    node = find_node(state, which)
    stopped = stop_node(node, grace_s=grace_s)
    if node_processes(node):
        raise SearchStateError(f"worker {node.index} (pid {node.pid}) survived SIGKILL")
    state.nodes.remove(node)
    save_state(state, state_path)
    return node, stopped


def find_node(state: LocalClusterState, which: str) -> LocalNode:
    """The worker named by `which`: `2`, `worker-2` or its node pid; `ConfigError` otherwise."""
    key = which.strip().removeprefix("worker-").removeprefix("worker ")
    workers = ", ".join(f"worker-{n.index} (pid {n.pid})" for n in state.workers) or "none"
    if key.isdigit():
        for node in state.nodes:
            if int(key) in (node.index, node.pid):
                if node.role == "head":
                    raise ConfigError(f"remove-worker {which}: that is the head; "
                                      "use `s4op cluster local down` to stop the cluster")
                return node
    raise ConfigError(f"remove-worker {which}: no such worker node; workers: {workers}")


# --- stopping and status -----------------------------------------------------------------


def _cleanup_files(state: LocalClusterState, state_path: Path, keep_logs: bool = False) -> None:
    """Remove the token and state file; the logs and Ray's temp dir too unless `keep_logs`."""
    Path(state.token_path).unlink(missing_ok=True)
    if not keep_logs:
        shutil.rmtree(state.temp_dir, ignore_errors=True)
        shutil.rmtree(Path(state.token_path).parent, ignore_errors=True)
    Path(state_path).unlink(missing_ok=True)


def stop_local_cluster(
    state_path: str | Path | None = None, *, grace_s: float = 3.0, keep_logs: bool = False
) -> dict[int, list[int]]:
    """Stop the recorded nodes (workers first, head last) by session id; remove the state file,
    the token and (unless `keep_logs`) the logs and Ray temp dir.

    Returns {node pid: pids that were running}. Raises SearchStateError if any process of those
    sessions survives SIGKILL."""
    state_path = Path(state_path) if state_path is not None else default_state_path()
    state = load_state(state_path)
    if state is None:
        return {}
    stopped = {}
    for node in sorted(state.nodes, key=lambda n: n.role == "head"):
        stopped[node.pid] = stop_node(node, grace_s=grace_s)
    left = {node.pid: node_processes(node) for node in state.nodes}
    left = {pid: rest for pid, rest in left.items() if rest}
    if left:
        raise SearchStateError(f"local cluster processes survived SIGKILL: {left}")
    _cleanup_files(state, state_path, keep_logs=keep_logs)
    return stopped


def local_cluster_status(state_path: str | Path | None = None) -> list[dict]:
    """One row per recorded node: role, index, pid, cpus, gpus, resources, alive, live process
    count, its raylet's pid (None when not running), {kind: pids} of its processes, log."""
    from cluster.ray_processes import pids_by_kind

    state_path = Path(state_path) if state_path is not None else default_state_path()
    state = load_state(state_path)
    if state is None:
        return []
    rows = []
    for node in state.nodes:
        procs = node_processes(node)
        kinds = pids_by_kind(procs)
        rows.append(
            {"role": node.role, "index": node.index, "pid": node.pid, "cpus": node.cpus,
             "gpus": node.gpus, "resources": dict(node.resources), "alive": bool(procs),
             "processes": len(procs), "raylet_pid": (kinds.get("raylet") or [None])[0],
             "pids": kinds, "log": node.log}
        )
    return rows
