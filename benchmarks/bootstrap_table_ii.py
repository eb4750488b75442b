"""Intervals for a search's accuracy claims: a paired bootstrap over the test (and val) examples.

For each completed stage of a search, the selected model's predictions on the test and val splits
are resampled together with the dense model's (the same examples in every resample), giving a 95 %
interval for the stage's accuracy and for its difference from the dense model. Single-label tasks.

    .venv/bin/python benchmarks/bootstrap_table_ii.py <search folder> [--resamples 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def paired_bootstrap(correct: dict, reference: str, *, resamples: int = 2000, seed: int = 0) -> dict:
    """{key: (mean, lo, hi, diff, diff_lo, diff_hi)} from `correct[key]` (n,) 0/1 arrays over the same
    examples; differences are against `correct[reference]`; 95 % percentile intervals."""
    n = len(correct[reference])
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))  # (R n)
    ref = correct[reference][idx].mean(axis=1)  # (R,)
    out = {}
    for key, c in correct.items():
        acc = c[idx].mean(axis=1)  # (R,)
        diff = acc - ref  # (R,)
        out[key] = (float(c.mean()), *np.percentile(acc, [2.5, 97.5]).tolist(),
                    float(c.mean() - correct[reference].mean()), *np.percentile(diff, [2.5, 97.5]).tolist())
    return out


def main() -> None:
    from orchestrator.search.folder import CONFIG_NAME
    from orchestrator.reports.table import load_search
    from search_spaces.config import load_search_config
    from workers.checkpoint import load_checkpoint
    from workers.data import load_task
    from workers.training import predict_logits

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("search", type=Path)
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    search = load_search(args.search)
    cfg = load_search_config(args.search / CONFIG_NAME)
    splits = load_task(cfg.task.name, cfg.task.data_dir, max_len=cfg.task.max_len, val_fraction=cfg.task.val_fraction)
    stages = search.stages.sort_values("rate")
    for name in ("test", "val"):
        split = getattr(splits, name)
        correct = {}
        for row in stages.itertuples(index=False):
            model, _ = load_checkpoint(row.checkpoint)
            logits = predict_logits(model, split, batch_size=50)  # (n classes)
            correct[float(row.rate)] = (logits.argmax(axis=1) == split.y).astype(float)  # (n,)
        result = paired_bootstrap(correct, 0.0, resamples=args.resamples, seed=args.seed)
        print(f"\n{search.name}: {name} accuracy, n = {len(split)}, paired bootstrap of {args.resamples} resamples, 95 %")
        print("| rate | accuracy % [95 % interval] | vs dense, points [95 % interval] |")
        print("|---|---|---|")
        for rate, (m, lo, hi, d, dlo, dhi) in result.items():
            vs = "-" if rate == 0.0 else f"{100 * d:+.1f} [{100 * dlo:+.1f}, {100 * dhi:+.1f}]"
            print(f"| {rate * 100:.0f} % | {100 * m:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] | {vs} |")


if __name__ == "__main__":
    main()
