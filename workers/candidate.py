"""One pruning candidate of a stage: the typed trial context and the choice of its kept channels.

`TrialContext` is what every trial of stage k needs, built once by the driver
(`orchestrator/search/rate_stage.py`) from the validated search config and read by the trial
(`workers/trial.py`): flat, typed, plain data (Tune pickles it into the stage's param space).
`TrialSample` is what varies between the stage's trials: the seed (grid) or an Optuna sample of
seed, allocation base and fine-tuning lr; a value the sampler did not set is the context's.
`trial_name` is the one rule naming a trial (`seed-<s>` on a grid, Tune's trial id when sampled).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class TrialContext:
    # the search and its folder (a local path; `search_uri` when the search lives on an object store)
    search: str
    search_dir: str
    search_uri: str | None
    stage_dir: str  # `stages/stage-<k>` of the working copy (starts.log)
    trials_dir: str  # `stages/stage-<k>/trials` (a URI on an object store): <trial>/model/ below it
    stage: int
    rate: float
    algorithm: str  # grid | optuna | optuna-pareto
    parent_checkpoint: str
    parent_sha256: str
    data_fingerprint: str
    # the task
    task: str
    data_dir: str
    max_len: int | None
    val_fraction: float
    loader: str | None  # task python: "package.module:function"
    metric: str | None  # one's own data: the metric, when not the default
    # the candidate's pruning (H and the layer count are the parent model's, e.g. an imported one's)
    allocation_policy: str
    allocation_base: float
    allocation_layer: int | None
    selection_policy: str
    selection_score: str
    selection_candidates: float
    bypass: str
    # its fine-tuning budget
    epochs: int
    lr: float
    weight_decay: float
    patience: int | None
    batch_size: int
    precision: str  # fp32 | bf16 | fp16 (autocast of the training forward; SSM kernel and FFT stay fp32)
    cpus_per_trial: int
    gpus_per_trial: float  # resources.gpu: > 0 trains on the GPU Ray assigns (workers.device)
    # where the driver tracks it (the trial itself never writes to MLflow)
    tracking_uri: str | None = None
    experiment_id: str | None = None
    stage_run_id: str | None = None

    def trial_name(self, seed: int, tune_trial_id: str | None) -> str:
        """The ledger trial id: `seed-<s>` for grid stages, Tune's trial id for sampled ones."""
        return f"seed-{int(seed)}" if self.algorithm == "grid" else str(tune_trial_id)

    def with_working_copy(self) -> "TrialContext":
        """This context pointed at the current driver's working copy (a trial restored by another
        driver of the same object-store search; see `workers.objectstore.with_working_copy`)."""
        from workers.objectstore import with_working_copy

        here = with_working_copy({"search_uri": self.search_uri, "search_dir": self.search_dir,
                                  "tracking_uri": self.tracking_uri})
        if here["search_dir"] == self.search_dir:
            return self
        moved = {k: v.replace(self.search_dir, here["search_dir"], 1) for k, v in
                 (("stage_dir", self.stage_dir),) if v.startswith(self.search_dir)}
        return replace(self, search_dir=here["search_dir"], tracking_uri=here["tracking_uri"], **moved)

    def following(self, stage_dir_now: str | None) -> "TrialContext":
        """This context re-based on the search folder Tune restored the stage from.

        Tune restores an interrupted trial with the context it first had, naming the folder of the
        driver that started it; when the folder was moved or copied since, `stage_dir_now` (the
        restored experiment's folder, `stages/stage-<k>` of the folder resumed now) differs, and every
        path of the old folder (and its default SQLite store) moves under the new one: a copy never
        writes into the original, a moved folder never re-creates the old one. Local folders only
        (an object-store search follows its working copy, `with_working_copy`).
        """
        if self.search_uri is not None or not stage_dir_now:
            return self
        now, was = Path(stage_dir_now), Path(self.stage_dir)
        if now == was or now.parts[-2:] != was.parts[-2:]:
            return self
        old_root, new_root = str(was.parent.parent), str(now.parent.parent)

        def moved(value: str | None) -> str | None:
            if value is None:
                return None
            for prefix in (old_root + "/", f"sqlite:///{old_root}/"):
                if value.startswith(prefix):
                    return value.replace(old_root, new_root, 1)
            return new_root if value == old_root else value

        return replace(self, search_dir=moved(self.search_dir), stage_dir=str(now), trials_dir=moved(self.trials_dir),
                       parent_checkpoint=moved(self.parent_checkpoint), tracking_uri=moved(self.tracking_uri))

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrialSample:
    """What varies between a stage's trials (Tune's config minus the context)."""

    seed: int
    alloc_base: float
    lr: float

    @classmethod
    def of(cls, config: dict, ctx: TrialContext) -> "TrialSample":
        """From a Tune trial config {"seed", optional "alloc_base", "lr", "ctx"}."""
        return cls(int(config["seed"]), float(config.get("alloc_base", ctx.allocation_base)),
                   float(config.get("lr", ctx.lr)))


def choose_kept(model, ctx: TrialContext, seed: int, alloc_base: float, length: int) -> list[list[int]]:
    """New kept channels per layer (original numbering) for this trial, a subset of the parent's."""
    from search_spaces.allocation import allocate
    from search_spaces.policies import IMPORTANCE
    from search_spaces.selection import select
    from workers.pruning import kept_channels, ssm_responses

    channels, n_layers = model.spec.d_model, model.spec.n_layers
    counts = allocate(ctx.allocation_policy, float(ctx.rate), n_layers, channels, base=float(alloc_base),
                      seed=seed, layer=ctx.allocation_layer)
    kept = kept_channels(model)
    scores = None
    if ctx.selection_policy != "random":
        score = IMPORTANCE.get(ctx.selection_score)
        scores = [score(K, D, length) for K, D in ssm_responses(model, length)]  # K (H_kept L), D (H_kept,)
    return select(ctx.selection_policy, counts, kept, seed=seed, channels=channels, scores=scores,
                  candidates=float(ctx.selection_candidates))
