"""`resume --force`: which config changes a search can take, given how far it got.

The ledger records what really ran, so a change that would make it say otherwise is refused, naming
the setting and the stage it would contradict:
- the rate of a completed stage (`search.rates[i]`);
- the baseline or the model (`baseline.*`, `model.*`) once stage 0 is complete;
- anything that reaches the trials (task, model, allocation, selection, bypass, fine-tuning, seeds,
  algorithm, CPUs per trial, its rate) of the interrupted stage, i.e. the first incomplete stage whose
  Tune experiment exists: Tune restores its trials with the settings they started with.
Everything else (later stages' rates and settings, latency, a new data folder holding the same data:
the fingerprint is checked) applies from the next stage that starts. Pure: reads nothing.
"""

from __future__ import annotations

from search_spaces.errors import SearchStateError

# config keys (dotted, as in `config_diff`) whose value reaches a stage's trials (workers.candidate.TrialContext)
TRIAL_PREFIXES = ("task.name", "task.max_len", "task.val_fraction", "model.", "search.allocation.",
                  "search.selection.", "search.bypass", "search.finetune.", "search.seeds", "search.algorithm.",
                  "search.mode", "resources.cpu")
BASELINE_PREFIXES = ("baseline.", "model.")


def _matches(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in prefixes)


def refused_change(old: dict, new: dict, *, completed: set[int], interrupted: int | None) -> str | None:
    """Why `resume --force` cannot go from config `old` to `new` (model_dump dicts), or None.

    `completed`: stage numbers the ledger says are complete; `interrupted`: the rate stage whose Tune
    experiment was started and is not complete, or None."""
    from orchestrator.tracking.ledger_view import flatten

    fo, fn = flatten(old), flatten(new)
    changed = [k for k in dict.fromkeys([*fo, *fn]) if k != "search.rates" and fo.get(k) != fn.get(k)]
    old_rates, new_rates = list(fo.get("search.rates") or []), list(fn.get("search.rates") or [])
    for k in sorted(s for s in completed if s >= 1):
        before = old_rates[k - 1] if k - 1 < len(old_rates) else None
        after = new_rates[k - 1] if k - 1 < len(new_rates) else None
        if before != after:
            return (f"search.rates[{k - 1}] changed ({before} -> {after}) but stage {k} is complete at rate {before}; "
                    "a completed stage cannot change")
    if 0 in completed:
        key = next((k for k in changed if _matches(k, BASELINE_PREFIXES)), None)
        if key:
            return f"{key} changed ({fo.get(key)} -> {fn.get(key)}) but stage 0 (the baseline) is complete"
    if interrupted is not None:
        before = old_rates[interrupted - 1] if interrupted - 1 < len(old_rates) else None
        after = new_rates[interrupted - 1] if interrupted - 1 < len(new_rates) else None
        key = f"search.rates[{interrupted - 1}]" if before != after else \
            next((k for k in changed if _matches(k, TRIAL_PREFIXES)), None)
        if key:
            was, now = (before, after) if key.startswith("search.rates[") else (fo.get(key), fn.get(key))
            return (f"{key} changed ({was} -> {now}) but stage {interrupted} (rate {before}) is interrupted with "
                    "trials started under the old value; resume without this change, or apply it once stage "
                    f"{interrupted} is complete")
    return None


def interrupted_stage(folder, completed: set[int], n_rates: int) -> int | None:
    """The first incomplete rate stage whose Tune experiment was started (its state in the folder)."""
    for k in range(1, n_rates + 1):
        if k not in completed:
            stage = folder.stage_dir(k)
            return k if (stage / "tuner.pkl").exists() or any(stage.glob("experiment_state-*.json")) else None
    return None


def check_forced(old: dict, new: dict, *, completed: set[int], interrupted: int | None) -> None:
    """Raise `SearchStateError` naming the setting when `refused_change` says no."""
    reason = refused_change(old, new, completed=completed, interrupted=interrupted)
    if reason:
        raise SearchStateError(f"resume --force refused: {reason}")
