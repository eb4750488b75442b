"""The Tune trainable: one trial = one pruning candidate of one stage, adapted to Tune.

Tune's config is {"seed", optional "alloc_base"/"lr" (Optuna), "ctx": `workers.candidate.TrialContext`}.
load the parent -> `choose_kept` -> compact -> fine-tune (a `tune.report` + checkpoint per epoch; a
restarted trial continues from its last epoch) -> evaluate val and test -> save the model -> final
report, whose keys are `TrialRow` columns (trial_id, checkpoint, val_metric, ...) plus `timings`
(wall-clock phase ends, read by the benchmarks). Latency is measured by the driver afterwards, with
exclusive use of the device; MLflow is written by the driver. Tune reuses worker processes, so
nothing per-trial lives in globals (the stage's data, `trial_io.task_splits`, is the one thing kept).
Device: with `resources.gpu` > 0 the trial fine-tunes and evaluates on the GPU Ray assigned to it
(`workers.device.assigned_device`; one error line naming the node when its torch has no CUDA), in
`search.finetune.precision`; `train_device` (e.g. `cuda:0 (NVIDIA H100)` or `cpu`) and, on a GPU,
`gpu_peak_mb` go into the final report, and so does the node it ran on (`node` = hostname, `node_id`,
`node_ip`: `workers.node_identity.this_node`). The data is read from the path the driver verified on
every node, or this node's cache of a URI (`trial_io.task_splits`).
"""

from __future__ import annotations

import json
import os
import time

from workers import trial_io


def run_trial(config: dict) -> None:
    """Tune function trainable (see module docstring)."""
    marks = {"process": trial_io.process_started(), "entry": time.time()}  # wall-clock phase ends, seconds
    cpu0 = time.process_time()
    import torch
    from ray import tune

    from workers.candidate import TrialSample, choose_kept
    from workers.checkpoint import load_checkpoint, save_checkpoint
    from workers.device import assigned_device
    from workers.node_identity import this_node
    from workers.pruning import compact, count_parameters, kept_channels
    from workers.training import evaluate, fit

    marks["imports"] = time.time()
    # a trial restored by a driver with another working copy, or from a moved or copied folder
    ctx = config["ctx"].with_working_copy().following(experiment_dir())
    sample = TrialSample.of(config, ctx)
    torch.set_num_threads(max(1, ctx.cpus_per_trial))
    torch.manual_seed(sample.seed)
    name = ctx.trial_name(sample.seed, tune.get_context().get_trial_id())
    device, train_device = assigned_device(ctx.gpus_per_trial)  # Ray's GPU share, or cpu
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)  # a reused worker: this trial's peak only
    started_at = trial_io.now()

    checkpoint = tune.get_checkpoint()
    restored = trial_io.restore(checkpoint) if checkpoint is not None else trial_io.Restored()
    trial_io.record_start(ctx.stage_dir, name, sample.seed, checkpoint is not None, restored.from_epoch)
    trial_io.injected_fault(ctx.stage, name, ctx.trials_dir)
    marks["restored"] = time.time()
    if restored.final is not None:  # finished before the restart: report the same result again
        tune.report(restored.final)
        return

    splits = trial_io.task_splits(ctx)
    marks["data"] = time.time()
    model, start_epoch = restored.model, restored.epoch
    if model is None:
        parent, _ = load_checkpoint(ctx.parent_checkpoint)
        kept = choose_kept(parent, ctx, sample.seed, sample.alloc_base, int(splits.train.x.shape[1]))
        model = compact(parent, kept, bypass=ctx.bypass)
        del parent
    started_at = restored.started_at or started_at
    proxy = {}
    if ctx.algorithm == "optuna-pareto":  # the sampler's latency objective, in every report (see in_trial_latency_ms)
        from workers.latency import in_trial_latency_ms

        proxy = {"latency_proxy_ms": in_trial_latency_ms(model, splits.val.x, splits.val.lengths)}
        model.train()
    epoch_extra = {"stage": ctx.stage, "seed": sample.seed, "trial": name, "started_at": started_at}
    marks["model"] = time.time()
    report_s = {"checkpoint": 0.0, "tune_report": 0.0}
    elapsed = [float(h["elapsed_s"]) for h in (restored.state.history if restored.state is not None else [])]

    def on_epoch(report) -> None:
        t0 = time.time()
        seconds = float(report.elapsed_s) - (elapsed[-1] if elapsed else 0.0)  # this epoch's, not cumulative
        elapsed.append(float(report.elapsed_s))
        with trial_io.epoch_checkpoint(model, report.state, report.epoch, epoch_extra) as folder:
            t1 = time.time()
            tune.report({"epoch": int(report.epoch), "loss": float(report.train_loss),
                         "val_metric": float(report.val_metric), "seconds": seconds, "final": False, **proxy},
                        checkpoint=tune.Checkpoint.from_directory(folder))
        report_s["checkpoint"] += t1 - t0
        report_s["tune_report"] += time.time() - t1

    result = fit(model, splits, epochs=ctx.epochs, lr=sample.lr, weight_decay=ctx.weight_decay,
                 batch_size=ctx.batch_size, patience=ctx.patience, seed=sample.seed,
                 on_epoch=on_epoch, start_epoch=start_epoch, state=restored.state, device=device,
                 precision=ctx.precision)
    marks["fit"] = time.time()
    val_metric = float(evaluate(model, splits.val, splits.info, batch_size=ctx.batch_size))
    test_metric = float(evaluate(model, splits.test, splits.info, batch_size=ctx.batch_size))
    marks["eval"] = time.time()
    model_dir = trial_io.model_dir(ctx, name)
    ends = [0.0] + [float(h.elapsed_s) for h in result.history]
    history = [{"epoch": h.epoch, "loss": float(h.train_loss), "val_metric": float(h.val_metric),
                "seconds": ends[i + 1] - ends[i]} for i, h in enumerate(result.history)]
    save_checkpoint(model, model_dir, task=ctx.task, data_fingerprint=ctx.data_fingerprint,
                    metrics={"val_metric": val_metric, "test_metric": test_metric},
                    extra={"stage": ctx.stage, "rate": ctx.rate, "seed": sample.seed, "trial": name,
                           "parent": ctx.parent_checkpoint, "history": history})
    final = {
        "final": True, "trial_id": name, "seed": sample.seed, "alloc_base": sample.alloc_base, "lr": sample.lr,
        "val_metric": val_metric, "test_metric": test_metric, "params": int(count_parameters(model)),
        "kept": json.dumps(kept_channels(model)), "epochs_run": int(result.epochs_run), "checkpoint": str(model_dir),
        "started_at": started_at, "ended_at": trial_io.now(), "train_device": train_device, **proxy,
        **{"node" if k == "hostname" else k: v for k, v in this_node().items()},
    }
    if device.startswith("cuda"):
        final["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    marks["saved"] = time.time()
    final["timings"] = json.dumps({"marks": marks, "per_epoch_s": report_s, "cpu_s": time.process_time() - cpu0,
                                   "pid": os.getpid()})
    with trial_io.final_checkpoint(final) as folder:
        tune.report(final, checkpoint=tune.Checkpoint.from_directory(folder))


def experiment_dir() -> str | None:
    """The folder of the Tune experiment this trial runs in (`stages/stage-<k>` of the search
    folder the driver runs or restored now), through Tune's storage context (a DeveloperAPI)."""
    from ray import tune

    try:
        return str(tune.get_context().get_storage().experiment_fs_path)
    except Exception:  # noqa: BLE001 - outside Tune, or a Ray without it: the context stands as given
        return None
