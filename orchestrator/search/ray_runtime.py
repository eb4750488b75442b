"""Let Tune's trial actors start in Ray's idle, already-warm worker processes on an embedded Ray.

Ray starts one idle worker process per CPU when the driver connects, but an actor may take one
only if it asks for no runtime environment of its own. Tune gives every trainable actor a
runtime environment of environment variables (`PL_DISABLE_FORK=1` and a few it copies from the
driver, e.g. AWS credentials), so each slot's first trial of a stage waited for a fresh worker
process (runtime-env agent, python, `import ray`): 1.5-2 s of the ~4 s a slot's first trial took
to start (`benchmarks/RESULTS.md`, Tune overhead).

On an embedded Ray (`ray.init(address="local")`) every worker is started by this driver's raylet
and inherits the driver's environment as it was at `ray.init`. So `prepare()` sets Tune's default
variables in that environment before `ray.init`, and `install(inherited)` drops the runtime
environment of a trainable actor when every variable it would set already has that value in the
inherited environment (otherwise Tune's own behaviour is kept). `uninstall()` restores Tune's
behaviour; it is called when the embedded Ray stops, and nothing is installed when connecting to
a cluster (its workers inherit their nodes' environment, not ours). This reaches into Tune's
private `ray.tune.execution.class_cache` (checked on Ray 2.60); on a Ray without it nothing changes.

`system_config()` also has the embedded Ray's workers import the trial's modules (ray.tune,
torch, workers.*) before they accept work (Ray's `preload_python_modules`): the idle workers do
it while stage 0 runs, so a slot's first trial no longer spends ~1.5 s importing. Each idle worker
then holds ~230 MB (USS, CPU torch); on a big machine whose trials take several CPUs each, some of
those workers never host a trial: `S4OP_PRELOAD=0` turns the preload off.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("s4op.warm_workers")

PRELOAD_MODULES = ("ray.tune", "torch", "workers.trial", "workers.checkpoint", "workers.pruning",
                   "workers.training")

_ORIGINAL_GET = None  # Tune's `_ActorClassCache.get` while ours is installed
_INHERITED: dict[str, str] = {}  # the environment the embedded Ray's workers inherit


def _class_cache():
    """Tune's actor class cache module, or None on a Ray whose internals differ."""
    try:
        from ray.tune.execution import class_cache
    except ImportError:  # pragma: no cover - another Ray layout
        return None
    needed = ("_ActorClassCache", "DEFAULT_ENV_VARS", "ENV_VARS_TO_PROPAGATE")
    return class_cache if all(hasattr(class_cache, name) for name in needed) else None


def tune_actor_env() -> dict[str, str]:
    """The variables Tune would put in a trainable actor's runtime environment now."""
    cc = _class_cache()
    if cc is None:
        return {}
    env = dict(cc.DEFAULT_ENV_VARS)
    env.update({k: os.environ[k] for k in cc.ENV_VARS_TO_PROPAGATE if k in os.environ})
    return env


def prepare() -> dict[str, str]:
    """Set Tune's default actor variables in this process (before `ray.init`); returns a copy of
    the environment the embedded Ray's workers will inherit."""
    cc = _class_cache()
    for key, value in (dict(cc.DEFAULT_ENV_VARS) if cc is not None else {}).items():
        os.environ.setdefault(key, value)
    return dict(os.environ)


def system_config(cpus: int) -> dict:
    """Ray `_system_config` for an embedded Ray of `cpus` CPUs: keep up to `cpus` idle workers
    (with Ray's default the raylet stopped its idle workers as a stage's trials were requested and
    started fresh ones instead, in 4 of 5 runs), and have workers preload the trial's modules
    (unless S4OP_PRELOAD=0)."""
    config: dict = {"num_workers_soft_limit": int(cpus)}
    if os.environ.get("S4OP_PRELOAD", "1").strip() != "0":
        config["preload_python_modules"] = list(PRELOAD_MODULES)
    return config


def inherits_tune_env(inherited: dict[str, str], env: dict[str, str]) -> bool:
    """True when a worker started with `inherited` already has every variable of `env`."""
    return all(inherited.get(key) == value for key, value in env.items())


def install(inherited: dict[str, str]) -> bool:
    """Make Tune create trainable actors without a runtime environment while the embedded Ray's
    workers inherit what it would set; returns whether the hook is installed."""
    global _ORIGINAL_GET, _INHERITED
    cc = _class_cache()
    if cc is None:
        log.debug("Tune's actor class cache not found; trial actors keep their runtime environment")
        return False
    _INHERITED = dict(inherited)
    if _ORIGINAL_GET is not None:
        return True
    _ORIGINAL_GET = original = cc._ActorClassCache.get

    def get(self, trainable_cls):
        if not inherits_tune_env(_INHERITED, tune_actor_env()):
            return original(self, trainable_cls)  # a variable changed since ray.init: Tune's way
        if trainable_cls not in self._cache:
            import ray

            self._cache[trainable_cls] = ray.remote(trainable_cls)
        return self._cache[trainable_cls]

    cc._ActorClassCache.get = get
    return True


def uninstall() -> None:
    """Restore Tune's own actor class cache."""
    global _ORIGINAL_GET, _INHERITED
    cc = _class_cache()
    if cc is not None and _ORIGINAL_GET is not None:
        cc._ActorClassCache.get = _ORIGINAL_GET
    _ORIGINAL_GET, _INHERITED = None, {}


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
