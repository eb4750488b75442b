"""The stage loop of a search: stage 0 = the dense baseline, then one Tune stage per pruning rate.

Which rate stage runs next is `target_plan.planned_stage`'s (every configured rate in order, or,
under `search.target`, until the boundary is crossed, then the refined rates); completed stages
(ledger) are skipped, their checkpoints verified first; an interrupted stage is continued
(`rate_stage.py`, Tune's restore). Incremental mode: a stage's parent is the best model of the
completed stage with the highest rate below its own; one-shot mode: the baseline always is. The search folder's layout is
`folder.py`'s; stage 0 is `baseline_stage.py`, a rate stage `rate_stage.py`.
"""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.search import ledger
from orchestrator.search.baseline_stage import check_rates_reachable, run_baseline_stage, verified_stage_checkpoint
from orchestrator.search.context import SearchContext
from orchestrator.search.create import create_search
from orchestrator.search.folder import SearchFolder
from orchestrator.search.interrupt import arm, at_stage, interruptible
from orchestrator.search.nodes import check_data_on_nodes
from orchestrator.search.rate_stage import run_rate_stage
from orchestrator.search.ray_runtime import check_trial_resources, start_ray, stop_ray
from orchestrator.search.stage_latency import check_latency_node
from orchestrator.search.target_plan import max_stages, planned_stage, target_answer
from orchestrator.tracking import ledger_view, publish


def start_search(cfg, *, storage: str | os.PathLike = "s4op-runs", name: str | None = None,
                 tracking_uri: str | None = None, address: str | None = "local",
                 allow_local_storage: bool = False, view=None, num_cpus: int | None = None,
                 work_dir: str | os.PathLike | None = None, command: str | None = None) -> Path:
    """`s4op search`: create `<storage>/<name>/` (config, lock, ledger, MLflow) and run it to the end."""
    search_dir, lock = create_search(cfg, storage=storage, name=name, tracking_uri=tracking_uri, address=address,
                                     allow_local_storage=allow_local_storage, work_dir=work_dir, command=command)
    try:
        with interruptible(search_dir, lock):
            return run_locked(search_dir, cfg, SearchFolder(search_dir).read_meta(), address=address, view=view,
                              num_cpus=num_cpus)
    finally:
        lock.release()


def open_search_context(search_dir: Path, cfg, meta: dict, *, address, view) -> SearchContext:
    """The live search's MLflow experiment and search run (failed writes go to the outbox)."""
    from orchestrator.search.view import SearchView
    from orchestrator.storage.work_copy import store_of
    from orchestrator.tracking.outbox import queueing_tracker

    folder = SearchFolder(search_dir)
    name = meta["name"]
    tracker = queueing_tracker(meta["tracking_uri"], folder.outbox_path)
    experiment_id = tracker.open_experiment(meta.get("experiment", name), artifact_dir=folder.artifacts_dir)
    facts = dict(meta.get("facts") or {})
    config = cfg.model_dump(mode="json")
    search_run = publish.open_search_run(tracker, experiment_id, name, str(search_dir), config, facts, meta)
    tracker.log_artifact(search_run, folder.config_path)  # config.yaml, as started
    view = view or SearchView(n_stages=max_stages(cfg), search=name)
    return SearchContext(folder, cfg, name, meta["tracking_uri"], tracker, experiment_id, search_run, view,
                         address=address, facts=facts, store=store_of(meta, search_dir))


def run_locked(search_dir: Path, cfg, meta: dict, *, address, view, num_cpus) -> Path:
    """The stage loop; the caller holds the search lock."""
    from orchestrator.baseline import prepare_data

    ctx = open_search_context(Path(search_dir), cfg, meta, address=address, view=view)
    if ctx.store is not None:  # before Ray starts: restored trials follow this working copy
        ctx.store.export_work_copy(meta)
    s = cfg.search
    try:
        ctx.splits, ctx.fingerprint = prepare_data(cfg)
        ctx.facts.update(ctx.folder.record_facts(data_fingerprint=ctx.fingerprint))
        ctx.tracker.set_tags(ctx.search_run_id, {"s4op.data_fingerprint": ctx.fingerprint})
        done = set(ledger.completed_stages(search_dir))
        recorded = {k: verified_stage_checkpoint(search_dir, k) for k in done}  # verified before anything runs
        check_rates_reachable(cfg, recorded.get(0))  # a rate that would be clamped: one line, exit 2, before stage 0
        ctx.ray = start_ray(address, num_cpus=num_cpus)
        check_trial_resources(cfg.resources)  # GPUs the cluster lacks: one line, exit 2, before stage 0
        check_latency_node(cfg.latency.node_resources)  # no node offers them: one line, exit 2, before stage 0
        if not ctx.ray.embedded:  # every node reads the same data (embedded: this machine, read above)
            check_data_on_nodes(str(cfg.task.data_dir), ctx.fingerprint)  # else one line naming the node, exit 2
        arm()  # ray.init replaced the SIGTERM handler
        ctx.view.start()
        at_stage(0, 0.0)
        recorded[0] = run_baseline_stage(ctx) if 0 not in done else recorded[0]
        rates = {r.stage: r.rate for r in ledger.stage_rows(search_dir)}
        for k in sorted(done - {0}):
            ctx.view.stage_skipped(k, float(rates[k]))
        while (step := planned_stage(cfg, search_dir)) is not None:
            parent = recorded[step.parent] if s.mode == "incremental" else recorded[0]
            if step.refined:
                ctx.view.note(f"stage {step.stage}: narrowing the target at rate {step.rate:g}")
            at_stage(step.stage, step.rate)
            recorded[step.stage] = run_rate_stage(ctx, step.stage, step.rate, parent)
        answer = target_answer(cfg, search_dir)
        if answer is not None:
            ctx.tracker.set_tags(ctx.search_run_id, ledger_view.target_tags(answer.text, answer.stage))
        ctx.tracker.finish(ctx.search_run_id)
        from orchestrator.latency_noise import protocol_from_config

        ctx.view.finish(ledger.stage_rows(search_dir), metric_name=ctx.splits.info.metric,
                        protocol=protocol_from_config(cfg.latency, ctx.splits.test.x.shape[1]))
        if answer is not None:
            ctx.view.note(answer.text)
    finally:
        ctx.view.stop()
        stop_ray(ctx.ray)
    return search_dir
