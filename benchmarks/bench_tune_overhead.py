"""Tune overhead: the same S pruning trials (a) sequentially in one process, (b) as a Tune stage.

(a) runs each trial's work (allocate, select, compact, fine-tune with a checkpoint per epoch,
evaluate) in a plain loop; (b) runs them with the real trainable `workers.trial.run_trial` as one
Tune stage with 2 concurrent trials (embedded Ray, MLflow on sqlite). Prints the wall-clock ratio
(b)/(a) and the per-trial overhead = ((b) - (a)/2) / (S/2): the extra wall time each of the S/2
trial slots costs beyond ideal 2-way parallelism.

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


def main() -> None:
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
    from orchestrator.driver import SearchContext, _tuner, create_search, read_meta, start_ray, trial_context
    from orchestrator.tracking import Tracker
    from orchestrator.view import SearchView, ViewCallback
    from search_spaces.config import SearchConfig
    from workers.checkpoint import save_checkpoint
    from workers.pruning import compact
    from workers.training import evaluate, fit
    from workers.trial import choose_kept

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

    # (a) sequential, one process, 1 thread per trial, same per-epoch checkpoint work
    torch.set_num_threads(1)
    ctx_plain = {"config": cfg.model_dump(mode="json"), "rate": 0.5}
    t0 = time.perf_counter()
    per_trial_a = []
    for seed in seeds:
        t1 = time.perf_counter()
        from workers.checkpoint import load_checkpoint

        model, _ = load_checkpoint(parent)
        kept = choose_kept(model, ctx_plain, seed, cfg.search.allocation.base, splits.train.x.shape[1])
        model = compact(model, kept, bypass="identity")
        ck = tmp / "seq-ckpt"

        def on_epoch(r, model=model, ck=ck):
            save_checkpoint(model, ck / "model")
            r.state.save(ck / "train_state")

        fit(model, splits, epochs=ft.epochs, lr=ft.lr, weight_decay=ft.weight_decay, batch_size=ft.batch_size,
            patience=ft.patience, seed=seed, on_epoch=on_epoch)
        evaluate(model, splits.val, splits.info, batch_size=ft.batch_size)
        evaluate(model, splits.test, splits.info, batch_size=ft.batch_size)
        save_checkpoint(model, tmp / "seq-final" / str(seed))
        per_trial_a.append(time.perf_counter() - t1)
    wall_a = time.perf_counter() - t0

    # (b) a Tune stage with 2 concurrent trials (real trainable, MLflow on sqlite)
    meta = read_meta(search_dir)
    tracker = Tracker(meta["tracking_uri"])
    exp = tracker.open_experiment("bench")
    ctx = SearchContext(search_dir, cfg, "bench", meta["tracking_uri"], tracker, exp, None, splits=splits,
                        fingerprint=fp, view=SearchView(n_stages=1, live=False))
    ctx.ray = start_ray("local", num_cpus=2)
    trial_ctx = trial_context(ctx, 1, 0.5, str(parent), None, 1.0)
    t0 = time.perf_counter()
    grid = _tuner(ctx, 1, trial_ctx, ViewCallback()).fit()
    wall_b = time.perf_counter() - t0
    ok = sum(1 for r in grid if (r.metrics or {}).get("final"))
    import ray

    ray.shutdown()
    lock.release()
    S = len(seeds)
    result = {
        "trials": S, "epochs": args.epochs, "train_examples": args.train, "d_model": args.d_model,
        "max_len": args.max_len, "mean_trial_s_sequential": wall_a / S, "wall_sequential_s": wall_a,
        "wall_tune_s": wall_b, "ratio_tune_over_sequential": wall_b / wall_a,
        "per_trial_overhead_s": (wall_b - wall_a / 2) / (S / 2), "tune_trials_completed": ok,
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    print(json.dumps(result, indent=1))
    if args.out is None:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
