"""A realistic search ledger for report tests: stage 0 dense, then rates with 3 seeds each."""

from __future__ import annotations

from orchestrator.search import ledger

H, LAYERS = 8, 3


def kept_for(rate: float, layers: int = LAYERS, H: int = H) -> list[list[int]]:
    """Depth-aware-looking kept sets: deeper layers lose more channels; at least one kept."""
    out = []
    for i in range(layers):
        pruned = min(H - 1, round(rate * H * (0.5 + i / max(layers - 1, 1))))
        out.append(list(range(H - pruned)))
    return out


def write_search(folder, name="demo", rates=(0.3, 0.5, 0.9), seeds=(7, 42, 123), metric_name="accuracy",
                 dense_latency=10.0, dense_params=10_000, checkpoints=None, with_test=True, layers=LAYERS,
                 length=64):
    """Write trials.parquet + stages.parquet like the driver does; returns the stage rows written.

    Metric per trial = 0.80 - 0.2 rate^2 + small seed offset; latency = dense * (1 - 0.6 rate) + seed
    jitter; params = dense * (1 - 0.5 rate). `checkpoints[stage] = (path, sha256)` fills the columns.
    """
    checkpoints = checkpoints or {}
    stage_rows = []
    path0, sha0 = checkpoints.get(0, (f"{folder}/baseline", "0" * 64))
    base = {"search": name, "stage": 0, "rate": 0.0, "status": "completed", "n_trials": 1, "n_failed": 0,
            "best_trial_id": "baseline", "best_seed": 0, "metric_name": metric_name, "val_metric": 0.80,
            "test_metric": 0.79 if with_test else None, "latency_p50_ms": dense_latency,
            "latency_p90_ms": dense_latency * 1.1, "params": dense_params, "speedup_pct": 0.0,
            "param_reduction_pct": 0.0, "kept": ledger.encode_kept(kept_for(0.0, layers)), "checkpoint": path0,
            "checkpoint_sha256": sha0, "mlflow_run_id": None, "started_at": "2026-01-01T00:00:00Z",
            "ended_at": "2026-01-01T00:01:00Z"}
    ledger.write_stage(folder, base)
    stage_rows.append(base)
    for k, rate in enumerate(rates, start=1):
        trials = []
        for j, seed in enumerate(seeds):
            metric = 0.80 - 0.2 * rate**2 + 0.01 * (j - 1) * (1 + rate)
            latency = dense_latency * (1 - 0.6 * rate) + 0.1 * j
            trials.append({
                "search": name, "stage": k, "rate": rate, "seed": seed, "trial_id": f"t{k}_{seed}",
                "status": "completed", "metric_name": metric_name, "val_metric": metric,
                "test_metric": metric - 0.01 if with_test else None, "latency_p50_ms": latency,
                "latency_p90_ms": latency * 1.1, "latency_batch": 1, "latency_threads": 1,
                "latency_length": length, "latency_device": "cpu", "params": int(dense_params * (1 - 0.5 * rate)),
                "kept": ledger.encode_kept(kept_for(rate, layers)), "is_best": False})
        trials.append({"search": name, "stage": k, "rate": rate, "seed": 999, "trial_id": f"t{k}_fail",
                       "status": "failed", "error": "boom", "metric_name": metric_name, "is_best": False})
        best = max(trials[:-1], key=lambda t: t["val_metric"])
        best["is_best"] = True
        ledger.write_trials(folder, trials)
        path, sha = checkpoints.get(k, (f"{folder}/stages/stage-{k}/best", "0" * 64))
        row = {"search": name, "stage": k, "rate": rate, "status": "completed", "n_trials": len(trials),
               "n_failed": 1, "best_trial_id": best["trial_id"], "best_seed": best["seed"],
               "metric_name": metric_name, "val_metric": best["val_metric"], "test_metric": best["test_metric"],
               "latency_p50_ms": best["latency_p50_ms"], "latency_p90_ms": best["latency_p90_ms"],
               "params": best["params"], "speedup_pct": 100 * (1 - best["latency_p50_ms"] / dense_latency),
               "param_reduction_pct": 100 * (1 - best["params"] / dense_params), "kept": best["kept"],
               "checkpoint": path, "checkpoint_sha256": sha, "mlflow_run_id": None}
        ledger.write_stage(folder, row)
        stage_rows.append(row)
    return stage_rows


def write_real_search(folder, name="real", rates=(0.5, 0.9), *, bidirectional=False, input_kind="tokens",
                      seed=0, length=32):
    """A search folder whose stages point at real checkpoints (S4D, 2 layers, H 8, N 4) with true sha256."""
    import torch

    from workers.checkpoint import checkpoint_sha256, save_checkpoint
    from workers.models import ModelSpec, S4Model
    from workers.pruning import compact

    torch.manual_seed(seed)
    spec = ModelSpec(kind="s4d", d_input=10 if input_kind == "tokens" else 3, d_output=3, input_kind=input_kind,
                     d_model=H, n_layers=2, d_state=4, bidirectional=bidirectional)
    dense = S4Model(spec).eval()
    models, checkpoints = {0: dense}, {}
    for k, rate in enumerate((0.0, *rates)):
        model = dense if k == 0 else compact(dense, kept_for(rate, layers=2))
        path = save_checkpoint(model, f"{folder}/stages/stage-{k}/best", task="listops")
        models[k] = model
        checkpoints[k] = (str(path), checkpoint_sha256(path))
    write_search(folder, name=name, rates=rates, checkpoints=checkpoints, layers=2, length=length)
    return models
