"""Ray for a search: connect to a cluster or embed one, with Tune's settings for a search.

Tune's settings (`TUNE_ENV`: a state snapshot every second so a killed driver loses little, the
old console output off, no log dedup) are set in this process only when a search starts Ray
(`start_ray`), never on import: `status` and `sync-mlflow` import the search modules and must not
change them. On an embedded Ray (`--address local`) the workers are kept warm through Ray's public
`_system_config`: up to one idle worker per CPU is kept (Ray's default limit stopped idle workers as
a stage's trials were requested), and every worker imports the trial's modules (ray.tune, torch,
workers.*) before it accepts work (`preload_python_modules`; `S4OP_PRELOAD=0` turns it off: each
idle worker then holds ~230 MB less). Tune itself is driven through its public API only: a trial
actor gets Tune's own runtime environment, so a slot's first trial of a stage starts a fresh worker
process (see benchmarks/RESULTS.md, "Tune driven through its public API").
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass

from search_spaces.errors import ConfigError

PRELOAD_MODULES = ("ray.tune", "torch", "workers.trial", "workers.checkpoint", "workers.pruning",
                   "workers.training")
TUNE_ENV = {
    "TUNE_GLOBAL_CHECKPOINT_S": "1",  # a killed driver loses <= 1 s of Tune state
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_DEDUP_LOGS": "0",
}
_STARTED_HERE = False


@dataclass
class RayHandle:
    started_here: bool
    total_cpus: int
    embedded: bool = False


def is_embedded(address: str | None) -> bool:
    return address in (None, "", "local")


def system_config(cpus: int) -> dict:
    """Ray `_system_config` for an embedded Ray of `cpus` CPUs (see module docstring)."""
    config: dict = {"num_workers_soft_limit": int(cpus)}
    if os.environ.get("S4OP_PRELOAD", "1").strip() != "0":
        config["preload_python_modules"] = list(PRELOAD_MODULES)
    return config


def embedded_gpus(value: str | None) -> int | None:
    """S4OP_NUM_GPUS for an embedded Ray: the GPUs it offers (None: Ray detects them). On a machine
    without GPUs, `S4OP_NUM_GPUS=2` gives logical GPUs that Ray schedules by (packing tests; with
    S4OP_LOGICAL_GPUS=1 a trial holding one trains on the CPU, see workers.device)."""
    if value is None or not value.strip():
        return None
    if not value.strip().isdigit():
        raise ConfigError(f"S4OP_NUM_GPUS: got {value!r}, expected a whole number of GPUs (0, 1, 2, ...)")
    return int(value)


def start_ray(address: str | None, *, num_cpus: int | None = None) -> RayHandle:
    """Connect to (or embed) Ray. "local"/None: `ray.init(address="local", num_cpus=...)`."""
    import ray

    global _STARTED_HERE
    if ray.is_initialized():
        return RayHandle(_STARTED_HERE, int(ray.cluster_resources().get("CPU", 1)), _STARTED_HERE and is_embedded(address))
    for key, value in TUNE_ENV.items():
        os.environ.setdefault(key, value)
    _STARTED_HERE = True
    common = dict(include_dashboard=False, log_to_driver=bool(os.environ.get("S4OP_RAY_LOGS")),
                  configure_logging=True, logging_level=logging.WARNING)
    if is_embedded(address):
        cpus = int(num_cpus or os.environ.get("S4OP_NUM_CPUS") or len(os.sched_getaffinity(0)))
        gpus = embedded_gpus(os.environ.get("S4OP_NUM_GPUS"))
        ray.init(address="local", num_cpus=cpus, object_store_memory=200 * 1024**2,
                 _system_config=system_config(cpus), **({"num_gpus": gpus} if gpus is not None else {}), **common)
    else:
        target = os.environ.get("RAY_ADDRESS") if address == "auto" and os.environ.get("RAY_ADDRESS") else address
        check_reachable(target)
        with native_stderr() as said:
            try:
                ray.init(address=address, **common)
            except Exception as exc:  # noqa: BLE001 - Ray's many connection errors -> one line naming the address
                _STARTED_HERE = False
                said.failed = True
                raise ConfigError(connection_message(target, exc, said.text())) from None
    return RayHandle(True, int(ray.cluster_resources().get("CPU", 1)), is_embedded(address))


PROBE_S = 5.0  # a TCP connect to the cluster's GCS port within this, before Ray's own minutes of retries


def _host_port(address: str | None) -> tuple[str, int] | None:
    text = str(address or "").split("://", 1)[-1]
    host, _, port = text.rpartition(":")
    return (host, int(port)) if host and port.isdigit() else None


def check_reachable(address: str | None) -> None:
    """`ConfigError` within PROBE_S when HOST:PORT accepts no connection (a cluster that is gone)."""
    import socket

    target = _host_port(address)
    if target is None:
        return
    try:
        socket.create_connection(target, timeout=PROBE_S).close()
    except OSError as exc:
        raise ConfigError(f"Ray cluster at {address} is unreachable ({exc.strerror or exc}); check that the cluster "
                          "is up (`s4op cluster local status`, `ray status`) and --address / RAY_ADDRESS") from None


class _Said:
    """What Ray's C++ core wrote on this process's stderr while connecting (`native_stderr`)."""

    def __init__(self, handle):
        self.handle, self.failed = handle, False

    def text(self) -> str:
        self.handle.seek(0)
        return self.handle.read().decode(errors="replace")


@contextlib.contextmanager
def native_stderr():
    """While connecting, file descriptor 2 goes to a temporary file: Ray's core logs a warning per
    retry there (a wrong token: one a second for ~20 s), which no Python logger controls. On success
    it is written back to stderr as it was; on failure the caller reads it (`connection_message`)."""
    import tempfile

    with tempfile.TemporaryFile() as handle:
        said = _Said(handle)
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(handle.fileno(), 2)
        try:
            yield said
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if not said.failed:
                os.write(2, said.text().encode())


AUTH_WORDS = ("token", "auth", "unauthenticated", "permission")


def connection_message(address: str | None, exc: Exception, core_said: str = "") -> str:
    """One line for a failed `ray.init(address=...)`: the address and what to check (`core_said`: what
    Ray's core logged meanwhile, which names an authentication failure when the exception does not)."""
    text = " ".join(str(exc).split())[:200]
    if "InvalidAuthToken" in core_said or "Unauthenticated" in core_said:
        text = f"{text}; the cluster refused this client's token (InvalidAuthToken)"
    if any(w in text.lower() for w in AUTH_WORDS):
        hint = "check the cluster's token (RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH, RAY_AUTH_MODE) matches this cluster's"
    else:
        hint = "check that the cluster is up (`ray status`) and --address / RAY_ADDRESS"
    return f"cannot connect to the Ray cluster at {address or 'auto'} ({type(exc).__name__}: {text}); {hint}"


def stop_ray(handle: RayHandle | None) -> None:
    """Shut down the Ray this driver started (never another's)."""
    global _STARTED_HERE
    if handle is not None and handle.started_here:
        import ray

        ray.shutdown()
        _STARTED_HERE = False


def wait_for_idle_workers(n: int, timeout_s: float = 60.0, settle_s: float = 1.0) -> bool:
    """Wait until this driver's embedded Ray has `n` idle worker processes that used no CPU for
    `settle_s` (their preload done); False after `timeout_s`. For benchmarks and tests, which
    start a stage right after `ray.init` where a search has its stage 0 first."""
    import psutil

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        idle = [c for c in psutil.Process().children(recursive=True) if c.name() == "ray::IDLE"]
        try:
            before = [sum(c.cpu_times()[:2]) for c in idle]
            time.sleep(settle_s)
            busy = [sum(c.cpu_times()[:2]) - b for c, b in zip(idle, before)]
        except psutil.Error:
            continue
        if len(idle) >= n and max(busy) < 0.01 * settle_s:
            return True
    return False


def unmet_trial_resources(cpu: float, gpu: float, nodes: list[dict]) -> str | None:
    """One line naming the `resources` a trial asks for that no alive node of the cluster has, or None.

    nodes: `ray.nodes()`. Ray would otherwise keep such a trial pending forever (a GPU share on a
    GPU-less cluster, more CPUs than any node has)."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    most_gpu = max((float(r.get("GPU", 0.0)) for r in alive), default=0.0)
    most_cpu = max((float(r.get("CPU", 0.0)) for r in alive), default=0.0)
    total_gpu = sum(float(r.get("GPU", 0.0)) for r in alive)
    if gpu > 0 and most_gpu < min(gpu, 1.0):
        return (f"resources.gpu={gpu:g}: the Ray cluster has {total_gpu:g} GPUs (largest node {most_gpu:g}); "
                "set resources.gpu=0 (trials on CPUs) or add GPU nodes")
    if most_cpu < cpu:
        return (f"resources.cpu={cpu:g}: no node of the Ray cluster has that many CPUs (largest node {most_cpu:g}); "
                "lower resources.cpu")
    return None


def check_trial_resources(resources) -> None:
    """`ConfigError` before stage 0 when the running cluster can never give a trial its `resources`."""
    import ray

    message = unmet_trial_resources(float(resources.cpu), float(resources.gpu), ray.nodes())
    if message:
        raise ConfigError(message)
