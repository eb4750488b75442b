"""The Tune trainable: one trial = one pruning candidate of one stage (one seed, or one Optuna sample).

load the parent checkpoint -> allocate pruned channels per layer at the stage's rate -> select the
kept channels with the trial's seed -> compact -> fine-tune (a `tune.report` + checkpoint per epoch;
a restarted trial continues from its last epoch) -> evaluate val and test -> save the pruned model
-> final report. Latency is NOT measured here: trials share cores, so the driver measures every
trial's model afterwards with exclusive use of the device (`orchestrator/stage_latency.py`).

`config` = {"seed": int, optional "alloc_base": float, "lr": float, "ctx": {...}} where ctx is
built by the driver (`orchestrator/driver.py::trial_context`): search name and folder, stage,
rate, parent checkpoint, the search config as a dict, tracking URI, experiment and stage run ids.
The trial does not touch MLflow (nor import it): the driver opens its run and logs its per-epoch
metrics from the Tune results (`orchestrator/trial_tracking.py`). Each worker process may run
several trials in turn (Tune reuses actors), so nothing here may keep per-trial state in globals
(the stage's data, loaded once per process, is the one thing kept).
The final report carries `timings`: wall-clock phase ends of this trial (benchmarks read them).

Device: a trial whose config asks for GPUs (`resources.gpu` > 0) fine-tunes and evaluates on the
GPU Ray assigned to it (`workers.device.assigned_device`; one error line naming the node when that
node's torch has no CUDA), in `search.finetune.precision`. The final report names the device
(`train_device`, e.g. `cuda:0 (NVIDIA H100)` or `cpu`) and, on a GPU, the peak GPU memory the
trial allocated (`gpu_peak_mb`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

FINAL_MARKER = "final.json"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def trial_name(config: dict, tune_trial_id: str | None = None) -> str:
    """The ledger trial id: `seed-<s>` for grid stages, Tune's trial id for sampled ones (this
    trial's own when `tune_trial_id` is not given: call it inside the trainable then)."""
    if (config.get("ctx") or {}).get("algorithm", "grid") == "grid":
        return f"seed-{int(config['seed'])}"
    if tune_trial_id is None:
        from ray import tune

        tune_trial_id = tune.get_context().get_trial_id()
    return str(tune_trial_id)


def _record_start(stage_dir: Path, name: str, seed: int, resumed: bool, epoch) -> None:
    """One JSON line per trial start in `<stage>/starts.log` (from_epoch: epochs already done,
    or "final" when Tune restarted a trial whose final result was already saved)."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"trial": name, "seed": seed, "resumed": resumed, "from_epoch": epoch,
                       "pid": os.getpid(), "at": _now()})
    with open(stage_dir / "starts.log", "a") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def choose_kept(model, ctx: dict, seed: int, alloc_base: float, length: int) -> list[list[int]]:
    """New kept channels per layer (original numbering) for this trial, a subset of the parent's."""
    from search_spaces.allocation import allocate
    from search_spaces.importance import energy_scores, hinf_scores
    from search_spaces.selection import select
    from workers.pruning import kept_channels, ssm_responses

    search = ctx["config"]["search"]
    channels, n_layers = model.spec.d_model, model.spec.n_layers  # the parent's, e.g. an imported checkpoint's
    alloc = search["allocation"]
    counts = allocate(alloc["policy"], float(ctx["rate"]), n_layers, channels, base=float(alloc_base),
                      seed=seed, layer=alloc.get("layer"))
    kept = kept_channels(model)
    selection = search["selection"]
    scores = None
    if selection["policy"] != "random":
        score = hinf_scores if selection.get("score", "hinf") == "hinf" else energy_scores
        scores = [score(K, D, length) for K, D in ssm_responses(model, length)]  # K (H_kept L), D (H_kept,)
    return select(selection["policy"], counts, kept, seed=seed, channels=channels, scores=scores,
                  candidates=float(selection.get("candidates", 2.0)))


def _save_epoch_checkpoint(model, state, epoch: int, extra: dict):
    """A Tune checkpoint folder with the model and the train state (safetensors + JSON each)."""
    from ray import tune

    from workers.checkpoint import save_checkpoint

    folder = Path(tempfile.mkdtemp(prefix="s4op-epoch-"))
    save_checkpoint(model, folder / "model", extra=extra)
    if state is not None:
        state.save(folder / "train_state")
    (folder / "epoch.json").write_text(json.dumps({"epoch": epoch, **extra}))
    return folder, tune.Checkpoint.from_directory(str(folder))


_SPLITS: dict = {}  # {(task, data_dir, max_len, val_fraction, fingerprint): TaskSplits}, the last one loaded


def _task_splits(task: dict, fingerprint: str):
    """The stage's data, loaded once per worker process: a reused worker (Tune `reuse_actors`)
    runs the stage's next trial on the same splits without reading and parsing the files again.
    Batching copies rows out of the arrays (never writes to them), so sharing them is safe."""
    from workers.data import load_task

    key = (task["name"], str(task["data_dir"]), task.get("max_len"), task.get("val_fraction", 0.2), fingerprint)
    if key not in _SPLITS:
        _SPLITS.clear()
        _SPLITS[key] = load_task(task["name"], task["data_dir"], max_len=task.get("max_len"),
                                 val_fraction=task.get("val_fraction", 0.2), loader=task.get("loader"),
                                 metric=task.get("metric"))
    return _SPLITS[key]


def _injected_fault(ctx: dict, name: str) -> None:
    """Fault-injection hook for tests: S4OP_FAIL_TRIALS="<stage>/<trial>,..." makes those trials raise."""
    wanted = {x.strip() for x in os.environ.get("S4OP_FAIL_TRIALS", "").split(",") if x.strip()}
    if f"{ctx['stage']}/{name}" in wanted:
        raise RuntimeError(f"injected fault in stage {ctx['stage']} trial {name} (S4OP_FAIL_TRIALS)")


def _process_started() -> float:
    """Wall-clock time this worker process started (for the per-trial timing breakdown)."""
    try:
        import psutil

        return float(psutil.Process().create_time())
    except Exception:  # noqa: BLE001 - timings are informative only
        return float("nan")


def run_trial(config: dict) -> None:
    """Tune function trainable (see module docstring)."""
    marks = {"process": _process_started(), "entry": time.time()}  # wall-clock phase ends, seconds
    cpu0 = time.process_time()
    import torch
    from ray import tune

    from workers.checkpoint import load_checkpoint, save_checkpoint
    from workers.device import assigned_device
    from workers.pruning import compact, count_parameters, kept_channels
    from workers.training import TrainState, evaluate, fit

    marks["imports"] = time.time()
    from workers.objectstore import with_working_copy

    ctx = with_working_copy(config["ctx"])  # a trial restored by a driver with another working copy
    cfg = ctx["config"]
    finetune = cfg["search"]["finetune"]
    seed = int(config["seed"])
    alloc_base = float(config.get("alloc_base", cfg["search"]["allocation"]["base"]))
    lr = float(config.get("lr", finetune["lr"]))
    threads = max(1, int(ctx.get("cpus_per_trial", 1)))
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    name = trial_name(config)
    _injected_fault(ctx, name)
    device, train_device = assigned_device(float((cfg.get("resources") or {}).get("gpu", 0.0)))
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)  # a reused worker: this trial's peak only
    stage_dir = Path(ctx["search_dir"]) / "stages" / f"stage-{ctx['stage']}"
    started_at = _now()

    checkpoint = tune.get_checkpoint()
    resumed_state, start_epoch, final = None, 0, None
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            folder = Path(folder)
            if (folder / FINAL_MARKER).exists():
                final = json.loads((folder / FINAL_MARKER).read_text())
            else:
                info = json.loads((folder / "epoch.json").read_text())
                start_epoch = int(info["epoch"])  # epochs completed (1-based epoch numbers)
                started_at = info.get("started_at", started_at)
                model, _ = load_checkpoint(folder / "model")
                if (folder / "train_state").exists():
                    resumed_state = TrainState.load(folder / "train_state")
    _record_start(stage_dir, name, seed, checkpoint is not None, "final" if final is not None else start_epoch)
    marks["restored"] = time.time()
    if final is not None:  # finished before the restart: report the same result again
        tune.report(final)
        return

    task = cfg["task"]
    splits = _task_splits(task, ctx.get("data_fingerprint", ""))
    length = int(splits.train.x.shape[1])
    marks["data"] = time.time()
    if start_epoch == 0:
        parent, _ = load_checkpoint(ctx["parent_checkpoint"])
        kept = choose_kept(parent, ctx, seed, alloc_base, length)
        model = compact(parent, kept, bypass=cfg["search"]["bypass"])
        del parent
    kept = kept_channels(model)

    epoch_extra = {"stage": ctx["stage"], "seed": seed, "trial": name, "started_at": started_at}
    marks["model"] = time.time()
    report_s = {"checkpoint": 0.0, "tune_report": 0.0}

    def on_epoch(report) -> None:
        t0 = time.time()
        folder, ckpt = _save_epoch_checkpoint(model, getattr(report, "state", None), report.epoch, epoch_extra)
        t1 = time.time()
        try:
            tune.report({"epoch": int(report.epoch), "loss": float(report.train_loss),
                         "val_metric": float(report.val_metric), "final": False}, checkpoint=ckpt)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        report_s["checkpoint"] += t1 - t0
        report_s["tune_report"] += time.time() - t1

    result = fit(model, splits, epochs=int(finetune["epochs"]), lr=lr, weight_decay=float(finetune["weight_decay"]),
                 batch_size=int(finetune["batch_size"]), patience=int(finetune["patience"]),
                 grad_clip=finetune.get("grad_clip"), seed=seed, on_epoch=on_epoch,
                 start_epoch=start_epoch, state=resumed_state, device=device,
                 precision=finetune.get("precision", "fp32"))
    marks["fit"] = time.time()
    batch = int(finetune["batch_size"])
    val_metric = float(evaluate(model, splits.val, splits.info, batch_size=batch))
    test_metric = float(evaluate(model, splits.test, splits.info, batch_size=batch))
    epochs_run = int(result.epochs_run)
    marks["eval"] = time.time()
    model_dir = stage_dir / "trials" / name / "model"
    if ctx.get("search_uri"):  # object store: the driver and the next stage read the model from there
        from workers.objectstore import join_uri

        model_dir = join_uri(ctx["search_uri"], "stages", f"stage-{ctx['stage']}", "trials", name, "model")
    params = int(count_parameters(model))
    save_checkpoint(model, model_dir, task=task["name"], data_fingerprint=ctx.get("data_fingerprint"),
                    metrics={"val_metric": val_metric, "test_metric": test_metric},
                    extra={"stage": ctx["stage"], "rate": ctx["rate"], "seed": seed, "trial": name,
                           "parent": ctx["parent_checkpoint"]})
    final = {
        "final": True, "trial": name, "seed": seed, "alloc_base": alloc_base, "lr": lr,
        "val_metric": val_metric, "test_metric": test_metric, "params": params, "kept": json.dumps(kept),
        "epochs_run": int(epochs_run), "model_dir": str(model_dir),
        "started_at": started_at, "ended_at": _now(), "node": socket.gethostname(),
        "train_device": train_device, "precision": finetune.get("precision", "fp32"),
    }
    if device.startswith("cuda"):
        final["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    marks["saved"] = time.time()
    final["timings"] = json.dumps({"marks": marks, "per_epoch_s": report_s, "cpu_s": time.process_time() - cpu0,
                                   "pid": os.getpid()})
    folder = Path(tempfile.mkdtemp(prefix="s4op-final-"))
    (folder / FINAL_MARKER).write_text(json.dumps(final))
    try:
        tune.report(final, checkpoint=tune.Checkpoint.from_directory(str(folder)))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
