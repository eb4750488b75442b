"""Running a sweep: one Ray cluster, each distinct baseline trained once, every search its own driver.

The sweep driver connects to the cluster (`--address`) or embeds one (`local`, as a search does) and
holds the sweep's lock. Each baseline key still missing its checkpoint is trained as one Ray task with
the trial resources (`search/baseline_remote.py`) into `baselines/<key>/` (per-epoch state there, so
an interrupted sweep continues the training). A search whose baseline is ready is started as its own
driver process, `s4op search` (or `s4op resume` when its folder exists), on the same cluster; each
keeps its own search folder and MLflow experiment and copies the shared checkpoint as its stage 0.
Finished searches are never started again. At most `max_parallel` search drivers run at once.

Search drivers run at a lower CPU priority (`DRIVER_NICE`, `S4OP_SWEEP_DRIVER_NICE` to change it, 0: off):
they mostly wait on Tune, and where they share cores with the trial slots (an embedded or one-machine
cluster) the trials get those cores first (benchmarks/RESULTS.md, "Sweeps"). Latency is timed in a
Ray task, never in a driver, so the niceness does not touch its figures.

Search drivers run in their own sessions and die with the sweep driver (Linux parent-death signal);
SIGINT / SIGTERM to the sweep stops them gracefully (they exit 130 / 143, resumable) before it
exits itself. The console says which search is at which stage; each driver's own console is in
`logs/<search>.log`.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.search import ledger
from orchestrator.search.folder import SearchFolder
from orchestrator.search.interrupt import SearchInterrupted
from orchestrator.sweep.folder import SweepFolder
from search_spaces.errors import ConfigError, S4opError, SearchStateError

POLL_S = 1.0
STOP_WAIT_S = 120.0  # a search driver's graceful stop (Tune saves its state) before it is killed
DRIVER_NICE = 10  # added to a search driver's niceness (see the module docstring)
_PR_SET_PDEATHSIG = 1


class SweepFailed(S4opError):
    """Some searches of a sweep ended with an error (their logs say why); the others finished."""

    exit_code = 1


def driver_nice(value: str | None) -> int:
    """S4OP_SWEEP_DRIVER_NICE: the niceness added to each search driver (unset: DRIVER_NICE; 0: none)."""
    if value is None or not value.strip():
        return DRIVER_NICE
    if not value.strip().isdigit() or int(value) > 19:
        raise ConfigError(f"S4OP_SWEEP_DRIVER_NICE: got {value!r}, expected a whole number 0..19 (0: drivers not niced)")
    return int(value)


def _child_setup(nice: int):
    def setup() -> None:  # in the child, before exec: SIGKILL when the sweep driver dies; lower priority
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if nice:
            os.nice(nice)

    return setup


def search_complete(search_dir: Path) -> bool:
    """True when the search folder exists and every planned stage is in its ledger."""
    if not SearchFolder(search_dir).is_search():
        return False
    from orchestrator.search.status import search_status

    return bool(search_status(search_dir)["complete"])


def training_config(config_path: str):
    """A search's config as its shared baseline is trained (without `baseline.checkpoint`)."""
    from search_spaces.config import SearchConfig, load_search_config

    data = load_search_config(config_path).model_dump(mode="json")
    data["baseline"]["checkpoint"] = None
    return SearchConfig.from_dict(data, source=config_path)


@dataclass
class _Search:
    name: str
    key: str | None
    config: str
    proc: subprocess.Popen | None = None
    done_stages: set = field(default_factory=set)
    state: str = "waiting"  # waiting | running | complete | failed


class SweepRunner:
    """The main loop (one thread: children are started from it, so their parent-death signal holds)."""

    def __init__(self, sweep_dir: Path, address: str, log=print, allow_local_storage: bool = False):
        self.folder, self.address, self.log = SweepFolder(sweep_dir), address, log
        self.allow_local_storage = allow_local_storage  # the sweep folder is a mount every node shares
        meta = self.folder.read_meta()
        self.name, self.max_parallel = meta["name"], meta.get("max_parallel") or len(meta["searches"])
        self.searches = [_Search(s["name"], s.get("key"), s["config"]) for s in meta["searches"]]
        self.training: dict[str, object] = {}  # key -> Ray ObjectRef of its baseline task
        self.failed_keys: dict[str, str] = {}
        self.epochs_seen: dict[str, int] = {}
        self.nice = driver_nice(os.environ.get("S4OP_SWEEP_DRIVER_NICE"))

    # ---- baselines
    def baseline_ready(self, key: str | None) -> bool:
        return key is None or (self.folder.baseline_checkpoint(key) / "model.json").is_file()

    def start_baselines(self) -> None:
        from orchestrator.search.baseline_remote import submit

        for s in self.searches:
            if s.state != "waiting" or self.baseline_ready(s.key) or s.key in self.training:
                continue
            cfg = training_config(s.config)
            self.folder.baseline_dir(s.key).mkdir(parents=True, exist_ok=True)
            self.training[s.key] = submit(cfg, self.folder.baseline_checkpoint(s.key), self.folder.baseline_state(s.key),
                                          tracking_uri=self.folder.baseline_tracking_uri(s.key), parent_run_id=None,
                                          run_key=f"{self.name}/baseline-{s.key}")
            users = [x.name for x in self.searches if x.key == s.key]
            self.log(f"baseline {s.key}: training once for {', '.join(users)} (epochs {cfg.baseline.train.epochs})")

    def poll_baselines(self) -> None:
        import ray

        from orchestrator.search.baseline_remote import collect, epoch_lines

        for key, ref in list(self.training.items()):
            lines = epoch_lines(self.folder.baseline_state(key))
            for line in lines[self.epochs_seen.get(key, 0):]:
                self.log(f"baseline {key}: epoch {line['epoch']} val {line['val_metric']:.4f}")
            self.epochs_seen[key] = len(lines)
            if not ray.wait([ref], timeout=0)[0]:
                continue
            del self.training[key]
            try:
                collect(ref, self.folder.baseline_checkpoint(key))
                self.log(f"baseline {key}: trained ({self.folder.baseline_checkpoint(key)})")
            except Exception as exc:  # noqa: BLE001 - its searches fail; the others go on
                self.failed_keys[key] = " ".join(str(exc).split())[:300] or type(exc).__name__
                self.log(f"baseline {key}: failed: {self.failed_keys[key]}")

    # ---- search drivers
    def command(self, s: _Search) -> list[str]:
        search_dir = self.folder.search_dir(s.name)
        cli = [sys.executable, "-m", "orchestrator.cli"]
        if SearchFolder(search_dir).is_search():
            return [*cli, "resume", str(search_dir), "--address", self.address]
        return [*cli, "search", s.config, "--storage", str(self.folder.searches_dir), "--name", s.name,
                "--address", self.address, *(["--allow-local-storage"] if self.allow_local_storage else [])]

    def launch(self, s: _Search) -> None:
        self.folder.logs_dir.mkdir(exist_ok=True)
        with open(self.folder.log_path(s.name), "ab") as out:
            s.proc = subprocess.Popen(self.command(s), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True, preexec_fn=_child_setup(self.nice))
        s.state = "running"
        self.log(f"{s.name}: started (driver PID {s.proc.pid}; log {self.folder.log_path(s.name)})")

    def poll_search(self, s: _Search) -> None:
        search_dir = self.folder.search_dir(s.name)
        if ledger.stages_path(search_dir).exists():
            rows = {r.stage: r for r in ledger.stage_rows(search_dir) if r.status == "completed"}
            for k in sorted(set(rows) - s.done_stages):
                r = rows[k]
                what = "baseline (shared)" if k == 0 and s.key else f"rate {r.rate:g}"
                self.log(f"{s.name}: stage {k} done ({what}): val {r.metric_name} {r.val_metric:.4f}")
            s.done_stages |= set(rows)
        rc = s.proc.poll()
        if rc is None:
            return
        s.state = "complete" if rc == 0 else "failed"
        tail = self.folder.log_path(s.name).read_text(errors="replace").strip().splitlines()[-1:] or [""]
        self.log(f"{s.name}: finished" if rc == 0 else f"{s.name}: failed (exit {rc}): {tail[0][:300]}")

    # ---- the loop
    def run(self) -> None:
        for s in self.searches:
            if search_complete(self.folder.search_dir(s.name)):
                s.state = "complete"
                self.log(f"{s.name}: complete, not started again")
        self.start_baselines()
        while any(s.state in ("waiting", "running") for s in self.searches):
            self.poll_baselines()
            running = sum(s.state == "running" for s in self.searches)
            for s in self.searches:
                if s.state == "waiting" and s.key in self.failed_keys:
                    s.state = "failed"
                    self.log(f"{s.name}: not started: its baseline failed")
                elif s.state == "waiting" and running < self.max_parallel and self.baseline_ready(s.key):
                    self.launch(s)
                    running += 1
                elif s.state == "running":
                    self.poll_search(s)
            time.sleep(POLL_S)

    def stop(self) -> None:
        """Stop every running search driver gracefully (SIGTERM; SIGKILL after STOP_WAIT_S)."""
        alive = [s for s in self.searches if s.proc is not None and s.proc.poll() is None]
        for s in alive:
            s.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_S
        for s in alive:
            try:
                s.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait()
        if self.training:
            import ray

            for ref in self.training.values():
                ray.cancel(ref, force=True)


def _raise_interrupted(sweep_dir: Path):
    def handler(signum, frame):
        raise SearchInterrupted(signum, f"sweep interrupted: continue it with `s4op sweep resume {sweep_dir}`")

    return handler


class SweepRefused(ConfigError):
    """Refused before any baseline or search of the sweep started."""


def run_sweep(sweep_dir: str | os.PathLike, *, address: str | None = "local", num_cpus: int | None = None,
              log=print, allow_local_storage: bool = False) -> Path:
    """Run every unfinished search of the sweep in `sweep_dir` to its end (see the module docstring).

    On a multi-node cluster the sweep folder must be a mount every node shares: refused (ConfigError,
    before any baseline or search starts) unless `allow_local_storage` says it is, which its search
    drivers are then told too."""
    import ray

    from cluster.storage import check_search_storage

    from orchestrator.search.lock import acquire_lock
    from orchestrator.search.ray_runtime import is_embedded, start_ray, stop_ray

    sweep_dir = Path(sweep_dir).resolve()
    runner = SweepRunner(sweep_dir, "", log, allow_local_storage)  # sweep.json read (and checked) before anything starts
    lock = acquire_lock(sweep_dir)
    handle = None
    try:
        handle = start_ray(address, num_cpus=num_cpus)
        runner.address = ray.get_runtime_context().gcs_address if is_embedded(address) else str(address)
        try:
            check_search_storage(str(sweep_dir), address=address, allow_local_storage=allow_local_storage)
        except ConfigError as exc:
            raise SweepRefused(str(exc)) from None
        for signum in (signal.SIGINT, signal.SIGTERM):  # after ray.init, which sets its own SIGTERM handler
            signal.signal(signum, _raise_interrupted(sweep_dir))
        try:
            runner.run()
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            runner.stop()
    finally:
        stop_ray(handle)
        lock.release()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL if signum == signal.SIGTERM else signal.default_int_handler)
    failed = [s.name for s in runner.searches if s.state == "failed"]
    if failed:
        raise SweepFailed(f"sweep {runner.name}: {len(failed)} of {len(runner.searches)} searches failed "
                          f"({', '.join(failed)}; see {runner.folder.logs_dir}); continue them with "
                          f"`s4op sweep resume {sweep_dir}`")
    return sweep_dir


def resume_sweep(sweep_dir: str | os.PathLike, **kwargs) -> Path:
    """`s4op sweep resume DIR`: continue the unfinished searches (finished ones untouched)."""
    if not SweepFolder(sweep_dir).is_sweep():
        raise SearchStateError(f"{sweep_dir} is not a sweep folder (sweep.json not found); "
                               "expected <storage>/<sweep> made by `s4op sweep SWEEP.yaml`")
    return run_sweep(sweep_dir, **kwargs)
