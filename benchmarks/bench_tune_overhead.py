"""Tune overhead: the same S pruning trials (a) sequentially in one process, (b) as a Tune stage.

(a) runs each trial's work (allocate, select, compact, fine-tune with a checkpoint per epoch,
evaluate) in a plain loop; (b) runs them with the real trainable `workers.trial.run_trial` as one
Tune stage with 2 concurrent trials (embedded Ray already started, MLflow on sqlite written by the
driver's `TrialTracking`), timed from `tune_stage.tuner(...).fit()` to the end of the stage's trial
MLflow writes (`tune_callback.flush`). Prints the wall-clock ratio (b)/(a) and the per-trial overhead
= ((b) - (a)/2) / (S/2): the extra wall time each of the S/2 trial slots costs beyond ideal 2-way
parallelism. (a) runs first and again last, and their mean is used: this VM's speed drifts by a few
% over minutes, which would otherwise count against (b) (the first-(a)-only figure is printed too).
(a2) runs the same trials in 2 plain forked processes (no Ray, no Tune): ((a2) - (a)/2) / (S/2) is
what two trials sharing this machine's cores, caches and memory bandwidth cost by themselves, and
((b) - (a2)) / (S/2) what Tune adds on top. Before (b) it waits for Ray's idle workers to settle,
as in a search, where Ray is up during stage 0. Then `breakdown`, which splits that overhead
(seconds per trial, summing to it) into
stage start, gaps between trials, stage end and time inside the trainable beyond (a), from the
wall-clock phase marks every trial reports (`timings` in its final result), plus the CPU seconds
the driver and Ray's own processes used during (b).

    .venv/bin/python benchmarks/bench_tune_overhead.py --trials 4 --epochs 3 --train 1200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path


def breakdown(timings: list[dict], t_start: float, t_end: float, *, concurrency: int, trial_a_s: float,
              fit_a_s: float) -> dict:
    """Split the per-trial overhead of (b) into where the time went (seconds per trial; they sum to it).

    With `concurrency` slots, concurrency * (b) = sum over slots of: idle before its first trial
    + each trial's time inside the trainable (entry -> model saved, from `run_trial`'s timings)
    + idle between trials + idle after its last. So the headline overhead
    (concurrency * (b) - S * (a)/S) / S = start_idle + between_idle + end_idle + in_trial_excess:
    - start_idle: `.fit()` called -> a slot's first trial entered (Tune setup, Ray actor process
      start, `import ray.tune`; Ray itself is already up, as in a search after its stage 0);
    - between_idle: a trial saved -> the next one on the slot entered (Tune bookkeeping, final
      report, actor reset or a new actor);
    - end_idle: a slot's last trial saved -> (b) done (final report, teardown, driver MLflow writes);
    - in_trial_excess: trainable time minus the sequential trial (a), split into imports (a
      fresh worker imports torch), setup (checkpoint restore, data, model) and fit (per-epoch
      checkpoint + report, cores shared with Ray; a fresh worker's first optimizer imports
      torch._dynamo).
    startup_s: slot free -> trial ready to work (imports done), for each slot's first trial (the
    stage's fixed cost: a new Ray worker process) and for the trials after it (reused worker).
    """
    if not timings:
        return {}
    marks = sorted((t["marks"] for t in timings), key=lambda m: m["entry"])
    n = len(marks)
    free_at = [t_start] * concurrency  # when each slot last became free
    start_idle = between_idle = 0.0
    first, later = [], []  # slot free -> trial's imports done, for slots' first trials / the others
    for m in marks:
        ready = [i for i in range(concurrency) if free_at[i] <= m["entry"]]
        slot = max(ready, key=lambda i: free_at[i]) if ready else min(range(concurrency), key=lambda i: free_at[i])
        gap = max(0.0, m["entry"] - free_at[slot])
        if free_at[slot] == t_start:
            start_idle += gap
            first.append(m["imports"] - t_start)
        else:
            between_idle += gap
            later.append(m["imports"] - free_at[slot])
        free_at[slot] = m["saved"]
    end_idle = sum(t_end - f for f in free_at)
    order = list(marks[0])  # process, entry, then each phase's end in the order the trial ran them
    phases = {b: sum(m[b] - m[a] for m in marks) / n for a, b in zip(order[1:], order[2:])}
    in_trial = sum(m["saved"] - m["entry"] for m in marks) / n
    setup = sum(m["model"] - m["imports"] for m in marks) / n
    return {
        "startup_s": {"slot_first_trial": sum(first) / len(first),
                      "slot_later_trial": sum(later) / len(later) if later else None},
        "overhead_split_s": {
            "start_idle": start_idle / n, "between_idle": between_idle / n, "end_idle": end_idle / n,
            "in_trial_excess": in_trial - trial_a_s,
            "of_which_imports": phases["imports"], "of_which_setup": setup,
            "of_which_fit_excess": phases["fit"] - fit_a_s,
        },
        "stage_fixed_s": {"fit_called_to_first_trial": marks[0]["entry"] - t_start,
                          "last_trial_saved_to_done": t_end - max(m["saved"] for m in marks)},
        "in_trial_phases_s": phases,
        "fit_per_epoch_hooks_s": {k: sum(t["per_epoch_s"][k] for t in timings) / n for k in timings[0]["per_epoch_s"]},
        "in_trial_cpu_s": sum(t["cpu_s"] for t in timings) / n,
        "worker_processes": len({t["pid"] for t in timings}),
    }


def ray_cpu_seconds() -> dict[str, float]:
    """CPU seconds so far of this driver process and of the Ray system processes it started
    (trial workers excluded: they exit with the stage; their CPU is in the trials' timings)."""
    import psutil

    me = psutil.Process()
    out = {"driver": sum(me.cpu_times()[:2]), "ray_system": 0.0}
    for child in me.children(recursive=True):
        try:
            if child.cmdline()[:1] and not child.cmdline()[0].startswith("ray::"):
                out["ray_system"] += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return out


_PLAIN_TRIAL = None  # set in main() before forking (a2)'s processes, which inherit it


def _plain_trial_in_child(seed: int, folder: Path) -> tuple[float, float]:
    return _PLAIN_TRIAL(seed, folder)


def main() -> None:
    global _PLAIN_TRIAL
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train", type=int, default=1200)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch

    from orchestrator.baseline import build_model, prepare_data
    from orchestrator.search.context import SearchContext
    from orchestrator.search.create import create_search
    from orchestrator.search.folder import SearchFolder
    from orchestrator.search.rate_stage import trial_context, tune_storage
    from orchestrator.search.ray_runtime import start_ray, wait_for_idle_workers
    from orchestrator.search.tune_stage import tuner
    from orchestrator.search.view import SearchView
    from orchestrator.tracking.client import Tracker
    from orchestrator.tracking.tune_callback import flush, prepare
    from search_spaces.config import SearchConfig
    from workers.checkpoint import save_checkpoint
    from workers.pruning import compact
    from workers.training import evaluate, fit
    from workers.candidate import choose_kept

    tmp = Path(args.out or tempfile.mkdtemp(prefix="s4op-bench-"))
    seeds = [7, 42, 123, 2024, 31650, 11, 13, 17][: args.trials]
    cfg = SearchConfig.from_dict({
        "name": "bench", "task": {"name": "listops", "data_dir": str(tmp / "data"), "max_len": args.max_len,
                                  "generate": {"train": args.train, "val": 200, "test": 200, "seed": 0,
                                               "options": {"min_len": 10, "max_len": args.max_len - 1}}},
        "model": {"kind": "s4d", "d_model": args.d_model, "n_layers": 3, "d_state": 64},
        "search": {"rates": [0.5], "seeds": seeds, "tie_break": "none",
                   "finetune": {"epochs": args.epochs, "lr": 1e-3, "weight_decay": 0.0, "patience": 9, "batch_size": 50}},
        "resources": {"cpu": 1, "max_concurrent": 2},
    })
    splits, fp = prepare_data(cfg)
    parent = save_checkpoint(build_model(cfg, splits.info), tmp / "parent", task="listops", data_fingerprint=fp)
    search_dir, lock = create_search(cfg, storage=tmp / "runs")
    ft = cfg.search.finetune
    meta = SearchFolder(search_dir).read_meta()
    tracker = Tracker(meta["tracking_uri"])
    exp = tracker.open_experiment("bench")
    ctx = SearchContext(SearchFolder(search_dir), cfg, "bench", meta["tracking_uri"], tracker, exp, None,
                        view=SearchView(n_stages=1, live=False), splits=splits, fingerprint=fp)
    trial_ctx = trial_context(ctx, 1, 0.5, str(parent), None)
    ctx_plain = trial_ctx

    # (a) sequential, one process, 1 thread per trial, same per-epoch checkpoint work
    torch.set_num_threads(1)
    def plain_trial(seed: int, folder: Path) -> tuple[float, float]:
        """One trial's work without Ray or MLflow; returns (trial seconds, fit seconds)."""
        from workers.checkpoint import load_checkpoint

        t1 = time.perf_counter()
        model, _ = load_checkpoint(parent)
        kept = choose_kept(model, ctx_plain, seed, cfg.search.allocation.base, splits.train.x.shape[1])
        model = compact(model, kept, bypass="identity")
        ck = folder / "ckpt"

        def on_epoch(r, model=model, ck=ck):
            save_checkpoint(model, ck / "model")
            r.state.save(ck / "train_state")

        t2 = time.perf_counter()
        fit(model, splits, epochs=ft.epochs, lr=ft.lr, weight_decay=ft.weight_decay, batch_size=ft.batch_size,
            patience=ft.patience, seed=seed, on_epoch=on_epoch)
        fit_s = time.perf_counter() - t2
        evaluate(model, splits.val, splits.info, batch_size=ft.batch_size)
        evaluate(model, splits.test, splits.info, batch_size=ft.batch_size)
        save_checkpoint(model, folder / "final" / str(seed))
        return time.perf_counter() - t1, fit_s

    def sequential() -> tuple[float, list[float]]:
        """(a): every trial in turn in this process; (wall seconds, fit seconds per trial)."""
        t0, fits = time.perf_counter(), []
        for seed in seeds:
            fits.append(plain_trial(seed, tmp / "seq")[1])
        return time.perf_counter() - t0, fits

    wall_a_before, fit_a_before = sequential()

    # (a2) the same trials in 2 plain forked processes (no Ray, no Tune): what 2-way concurrency
    # costs on this machine by itself (the two trials share caches and memory bandwidth)
    import multiprocessing

    _PLAIN_TRIAL = plain_trial
    t0 = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results_a2 = pool.starmap(_plain_trial_in_child, [(seed, tmp / "par" / str(i % 2)) for i, seed in enumerate(seeds)],
                                  chunksize=1)
    wall_a2 = time.perf_counter() - t0
    fit_a2 = [f for _, f in results_a2]

    # (b) a Tune stage with 2 concurrent trials (real trainable, MLflow on sqlite)
    ctx.ray = start_ray("local", num_cpus=2)
    if not wait_for_idle_workers(2):  # Ray up, its idle workers warm: as in a search once its stage 0 is done
        print("note: Ray's idle workers had not settled after 60 s")
    prepare(ctx.tracking_uri, str(search_dir), splits.info.metric)
    cpu_before = ray_cpu_seconds()
    t0, fit_start = time.perf_counter(), time.time()
    grid = tuner(cfg, 1, trial_ctx, tune_storage(ctx, 1), ctx.ray.total_cpus).fit()
    fit_end = time.time()
    flush()  # the trials' MLflow writes
    wall_b = time.perf_counter() - t0
    cpu_after = ray_cpu_seconds()
    ok = sum(1 for r in grid if (r.metrics or {}).get("final"))
    timings = [json.loads(r.metrics["timings"]) for r in grid if (r.metrics or {}).get("timings")]
    import ray

    ray.shutdown()
    lock.release()
    # (a) again after (b): the machine's speed drifts by several % over minutes here, and (a), (a2),
    # (b) always run in that order; the mean of (a) before and after cancels a linear drift
    wall_a_after, fit_a_after = sequential()
    wall_a, fit_a = (wall_a_before + wall_a_after) / 2, [(x + y) / 2 for x, y in zip(fit_a_before, fit_a_after)]
    S = len(seeds)
    result = {
        "trials": S, "epochs": args.epochs, "train_examples": args.train, "d_model": args.d_model,
        "max_len": args.max_len, "mean_trial_s_sequential": wall_a / S, "wall_sequential_s": wall_a,
        "wall_tune_s": wall_b, "mean_fit_s_sequential": sum(fit_a) / S, "ratio_tune_over_sequential": wall_b / wall_a,
        "per_trial_overhead_s": (wall_b - wall_a / 2) / (S / 2), "tune_trials_completed": ok,
        "wall_sequential_before_s": wall_a_before, "wall_sequential_after_s": wall_a_after,
        "per_trial_overhead_vs_a_before_only_s": (wall_b - wall_a_before / 2) / (S / 2),
        "wall_plain_parallel_s": wall_a2, "mean_fit_s_plain_parallel": sum(fit_a2) / S,
        "per_trial_overhead_of_2way_sharing_s": (wall_a2 - wall_a / 2) / (S / 2),
        "per_trial_overhead_of_tune_s": (wall_b - wall_a2) / (S / 2),
        "breakdown": breakdown(timings, fit_start, fit_start + wall_b, concurrency=2, trial_a_s=wall_a / S,
                               fit_a_s=sum(fit_a) / S)
        | {"driver_mlflow_after_fit_s": wall_b - (fit_end - fit_start),
           "cpu_s_during_b": {k: cpu_after[k] - cpu_before.get(k, 0.0) for k in cpu_after}},
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    print(json.dumps(result, indent=1))
    if args.out is None:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
