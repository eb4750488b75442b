"""A stage as a Ray Tune experiment: the driver's only `ray.tune` module.

`tuner` makes stage k's Tuner (grid over seeds, or Optuna samples of seed, allocation base and lr
within `search_spaces` ranges; `optuna-pareto`: Optuna's multi-objective sampler over val metric and
the trial's in-trial latency proxy) or restores the interrupted one from its storage; with
`search.scheduler.kind: asha` the stage's seeds run under Tune's ASHA (time = fine-tune epoch, the
stage's val metric, max), which stops the seeds falling behind; with `halving` under `_SeedHalving`
(synchronous successive halving, `search_spaces.halving`: seeds wait at each rung for the others).
`run_stage_trials` fits it and returns each trial's (sample, name, final result or last metrics, error, stopped by the scheduler). Tune's trial
events reach the console view and the trial tracking through `_TrialEvents`, which names each trial
once (`TrialContext.trial_name`) and hands plain values on.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ray import tune
from ray.tune.schedulers import FIFOScheduler

from orchestrator.search.interrupt import tune_fit
from orchestrator.search.ledger import candidate_row
from orchestrator.search.view import ViewEvents
from orchestrator.tracking.tune_callback import TrialTracking
from workers.candidate import TrialSample

log = logging.getLogger("s4op.tune_stage")

OPTUNA_BASE_RANGE = (1.25, 3.0)  # allocation base sampled uniformly in this range
OPTUNA_LR_FACTOR = 3.0  # fine-tuning lr sampled log-uniformly in [lr / f, lr * f]


class _TrialEvents(tune.Callback):
    """Tune's trial events -> our listeners (the view, the trial tracking). Holds no state."""

    listeners = (ViewEvents(), TrialTracking())

    @staticmethod
    def _of(trial):
        ctx = trial.config["ctx"].with_working_copy()
        sample = TrialSample.of(trial.config, ctx)
        return ctx, sample, ctx.trial_name(sample.seed, trial.trial_id)

    def on_trial_start(self, iteration, trials, trial, **info):
        ctx, sample, name = self._of(trial)
        for listener in self.listeners:
            listener.trial_started(ctx, candidate_row(ctx, sample, name))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        ctx, _, name = self._of(trial)
        for listener in self.listeners:
            listener.trial_result(ctx, name, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        name = self._of(trial)[2]
        for listener in self.listeners:
            listener.trial_completed(name, (trial.last_result or {}).get("val_metric"))

    def on_trial_error(self, iteration, trials, trial, **info):
        name = self._of(trial)[2]
        for listener in self.listeners:
            listener.trial_failed(name)


SAMPLED = ("optuna", "optuna-pareto")  # algorithms whose stages are Optuna samples, not a grid of seeds
PARETO_METRICS = (["val_metric", "latency_proxy_ms"], ["max", "min"])  # optuna-pareto's objectives


def param_space(cfg, trial_ctx) -> dict:
    s = cfg.search
    if s.algorithm.kind in SAMPLED:
        lr = float(s.finetune.lr)
        return {"seed": tune.choice(cfg.seed_list), "alloc_base": tune.uniform(*OPTUNA_BASE_RANGE),
                "lr": tune.loguniform(lr / OPTUNA_LR_FACTOR, lr * OPTUNA_LR_FACTOR), "ctx": trial_ctx}
    return {"seed": tune.grid_search(cfg.seed_list), "ctx": trial_ctx}


def tuner(cfg, k: int, trial_ctx, storage: tuple, total_cpus: int) -> tune.Tuner:
    """A new Tuner for stage k, or the interrupted one restored from `storage` =
    (experiment path, storage_path, pyarrow filesystem or None)."""
    from workers.trial import run_trial

    s = cfg.search
    resources = {"cpu": float(cfg.resources.cpu), "gpu": float(cfg.resources.gpu)}
    trainable = tune.with_resources(run_trial, resources)
    path, storage_path, fs = storage
    space = param_space(cfg, trial_ctx)
    if tune.Tuner.can_restore(str(path), storage_filesystem=fs):
        return tune.Tuner.restore(str(path), trainable, resume_errored=True, param_space=space,
                                  storage_filesystem=fs)
    per_node = max(1, int(total_cpus // max(resources["cpu"], 1e-9)))
    concurrent = cfg.resources.max_concurrent or per_node
    search_alg, samples = None, 1
    if s.algorithm.kind in SAMPLED:
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        # TPE, single- or multi-objective (MOTPE); NSGA-II's sampler holds a lock Tune cannot pickle
        sampler = optuna.samplers.TPESampler(seed=int(s.algorithm.seed) + k)
        if s.algorithm.kind == "optuna":
            search_alg = OptunaSearch(metric=s.metric, mode="max", sampler=sampler)  # in-memory storage
        else:
            search_alg = OptunaSearch(metric=PARETO_METRICS[0], mode=PARETO_METRICS[1], sampler=sampler)
        samples = int(s.algorithm.samples)
    stage_scheduler = scheduler(cfg, int(concurrent), halving_record(trial_ctx.stage_dir))
    capped_by_scheduler = isinstance(stage_scheduler, _SeedHalving)  # paused seeds must not hold Tune's cap
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(num_samples=samples, search_alg=search_alg, scheduler=stage_scheduler,
                                    max_concurrent_trials=None if capped_by_scheduler else int(concurrent),
                                    reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"stage-{k}", storage_path=storage_path, storage_filesystem=fs, verbose=0,
            failure_config=tune.FailureConfig(max_failures=2),
            # object store: Tune deleting old checkpoints races its lagging state upload (a killed driver's
            # state can name a deleted one); they are pruned when the stage completes (disk.prune_checkpoints)
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2 if fs is None else None),
            callbacks=[_TrialEvents()]),
    )


class _SeedHalving(FIFOScheduler):
    """`search_spaces.halving.Halving` as a Tune scheduler: a seed at a rung pauses (Tune keeps its
    epoch checkpoint) until the rung is decided; the kept ones run on from it, the others stop. It also
    caps the running trials at `concurrent` (Tune's own cap would count paused trials as live and wait
    for them forever)."""

    def __init__(self, halving, metric: str, concurrent: int, record: Path | None = None):
        super().__init__()
        self.halving, self._metric, self._mode, self.concurrent = halving, metric, "max", concurrent
        self.record = record  # the ids of the seeds it stopped (`halving_stopped`)

    def on_trial_add(self, tune_controller, trial):
        self.halving.add(trial.trial_id)
        if trial.trial_id in halving_stopped(self.record):  # restored: stopped while paused, see below
            self.halving.ended.add(trial.trial_id)
        if trial.status in (trial.TERMINATED, trial.ERROR):  # restored: it ended before the interruption
            self._apply(tune_controller, self.halving.on_end(trial.trial_id))

    def on_trial_result(self, tune_controller, trial, result):
        if result.get("final") or "epoch" not in result:
            return self.CONTINUE
        verdict = self.halving.on_result(trial.trial_id, int(result["epoch"]), result.get(self._metric))
        self._apply(tune_controller, verdict)
        if verdict.action == "wait":  # Tune's callbacks have no pause event: the console hears it here
            ViewEvents().trial_paused(_TrialEvents._of(trial)[2], result.get(self._metric))
        return {"continue": self.CONTINUE, "wait": self.PAUSE, "stop": self.STOP}[verdict.action]

    def on_trial_complete(self, tune_controller, trial, result):
        self._apply(tune_controller, self.halving.on_end(trial.trial_id))

    def on_trial_error(self, tune_controller, trial):
        self._apply(tune_controller, self.halving.on_end(trial.trial_id))

    def on_trial_remove(self, tune_controller, trial):
        self._apply(tune_controller, self.halving.on_end(trial.trial_id))

    def _apply(self, tune_controller, verdict) -> None:
        """Stop the paused seeds the verdict stops. Tune does not write a stopped paused trial's new
        status into its experiment state (only trials with an actor are re-serialised), so a restored
        stage would run them again: their ids are recorded in `self.record` as well."""
        if verdict.stop and self.record is not None:
            stopped = sorted(halving_stopped(self.record) | set(verdict.stop))
            tmp = self.record.with_name(f".{self.record.name}.tmp")
            tmp.write_text(json.dumps({"stopped": stopped}))
            tmp.replace(self.record)
        for t in tune_controller.get_trials():
            if t.trial_id in verdict.stop and t.status == t.PAUSED:
                tune_controller.stop_trial(t)
                ViewEvents().trial_stopped(_TrialEvents._of(t)[2])

    def choose_trial_to_run(self, tune_controller):
        trials = tune_controller.get_trials()
        if sum(t.status == t.RUNNING for t in trials) >= self.concurrent:
            return None
        for t in trials:  # restored seeds that were stopped while paused
            if t.status in (t.PENDING, t.PAUSED) and t.trial_id in self.halving.ended:
                tune_controller.stop_trial(t)
        for t in trials:
            if t.status == t.PENDING and self.halving.may_run(t.trial_id):
                return t
        paused = [t for t in trials if t.status == t.PAUSED]
        if paused and not any(t.status in (t.RUNNING, t.PENDING) for t in trials):
            self._apply(tune_controller, self.halving.unblock())  # seeds that will never report
        for t in paused:
            if t.status == t.PAUSED and self.halving.may_run(t.trial_id):
                return t
        return None

    def debug_string(self) -> str:
        return f"seed halving at epochs {self.halving.rungs}"


def halving_stopped(record: Path | None) -> set:
    """The trial ids `_SeedHalving` stopped, from its record file (none if there is none)."""
    if record is None or not Path(record).exists():
        return set()
    return set(json.loads(Path(record).read_text()).get("stopped", []))


def halving_record(stage_dir) -> Path:
    """Where a stage's `_SeedHalving` records the seeds it stopped."""
    return Path(stage_dir) / "halving-stopped.json"


def scheduler(cfg, concurrent: int = 1, record: Path | None = None):
    """The stage's seed scheduler (`search.scheduler.kind`): Tune's ASHA (`asha`), synchronous
    successive halving (`halving`, `_SeedHalving`, at most `concurrent` trials running), or None (every
    seed runs to the end). A seed that reaches the last epoch is never stopped: its final report must come."""
    sch, s = cfg.search.scheduler, cfg.search
    if sch.kind == "none" or int(s.finetune.epochs) <= int(sch.grace_epochs):
        return None
    if sch.kind == "halving":
        from search_spaces.halving import Halving, milestones

        expected = len(cfg.seed_list) if s.algorithm.kind not in SAMPLED else int(s.algorithm.samples)
        rungs = milestones(int(sch.grace_epochs), float(sch.reduction), int(s.finetune.epochs))
        return _SeedHalving(Halving(rungs, float(sch.reduction), expected), s.metric, int(concurrent), record)
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="epoch", metric=s.metric, mode="max", max_t=int(s.finetune.epochs),
                         grace_period=int(sch.grace_epochs), reduction_factor=float(sch.reduction),
                         stop_last_trials=False)


def ended_stage_results(cfg, storage: tuple, stopped: set = frozenset()):
    """The results of an interrupted stage whose trials had all finished before the driver died,
    or None. Tune's restore can then leave its searcher unfinished (its state and the experiment
    state are saved separately, and on an object store uploaded separately), and `fit()` would wait
    forever for a next trial; the finished trials' results are read from the experiment state."""
    from ray.tune import ExperimentAnalysis
    from ray.tune.result_grid import ResultGrid

    path, _, fs = storage
    if not tune.Tuner.can_restore(str(path), storage_filesystem=fs):
        return None
    try:
        analysis = ExperimentAnalysis(str(path), storage_filesystem=fs)
        grid = ResultGrid(analysis)
    except Exception as exc:  # noqa: BLE001 - an unreadable state: let Tune's own restore decide
        log.debug("restored results not readable (%s)", exc)
        return None
    s = cfg.search
    expected = len(cfg.seed_list) if s.algorithm.kind == "grid" else int(s.algorithm.samples)
    # ended: a final report, or (under a scheduler) stopped by it: terminated without one
    scheduled = getattr(getattr(s, "scheduler", None), "kind", "none") != "none"
    # `stopped`: ids the halving scheduler stopped while paused (Tune's state may still say PAUSED)
    ended = all((r.metrics or {}).get("final") or (scheduled and (t.status == "TERMINATED" or t.trial_id in stopped))
                for r, t in zip(grid, analysis.trials))
    if len(grid) >= expected and ended:
        return grid
    return None


@dataclass
class TrialOutcome:
    sample: TrialSample
    name: str
    result: dict  # the final result (`final` True) or the last metrics reported
    error: str | None  # set only when the trial's own code raised
    ctx: object = None  # the TrialContext the trial really ran with (a restored trial keeps its own)
    stopped: bool = False  # stopped early by the scheduler (no final result, no error)

    @property
    def unfinished(self) -> bool:
        """Neither a final result nor an error, nor stopped by the scheduler: interrupted or never
        started (never a failure)."""
        return not self.result.get("final") and self.error is None and not self.stopped


def outcomes(grid, trial_ctx, *, scheduled: bool = False) -> list[TrialOutcome]:
    """Each trial's outcome; `scheduled`: a scheduler (ASHA) ran the stage, so a trial that ended
    without a final result or an error was stopped early by it."""
    out = []
    for r in grid:
        m = dict(r.metrics or {})
        config = dict(r.config or {})
        config.setdefault("seed", m.get("seed", -1))
        ran_with = (config.get("ctx") or trial_ctx).with_working_copy()
        sample = TrialSample.of(config, ran_with)
        name = ran_with.trial_name(sample.seed, m.get("trial_id") or Path(r.path).name)
        stopped = scheduled and not m.get("final") and r.error is None
        error = None
        if not m.get("final") and r.error is not None:
            error = (str(r.error).strip().splitlines() or ["no final report"])[-1][:500]
        out.append(TrialOutcome(sample, name, m, error, ran_with, stopped))
    return out


def run_stage_trials(cfg, k: int, trial_ctx, storage: tuple, total_cpus: int, note=print) -> list[TrialOutcome]:
    """Fit stage k (or read its results, when every trial had ended before an interruption)."""
    grid = ended_stage_results(cfg, storage, halving_stopped(halving_record(trial_ctx.stage_dir)))
    if grid is not None:
        note(f"stage {k}: every trial had finished before the interruption; not running it again")
    else:
        with tune_fit():  # SIGINT/SIGTERM: Tune stops gracefully, then SearchInterrupted
            grid = tuner(cfg, k, trial_ctx, storage, total_cpus).fit()
    return outcomes(grid, trial_ctx, scheduled=cfg.search.scheduler.kind != "none")
