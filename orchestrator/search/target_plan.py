"""A search's target (`search.target`) over its ledger: the next stage to run and the answer so far.

The decisions are `search_spaces.target`'s (pure); this module only reads the completed stage rows
into its `StageResult`s, so the loop, `status` and `report` ask the same question the same way.
"""

from __future__ import annotations

import os

from orchestrator.search import ledger
from search_spaces.target import Answer, NextStage, StageResult, Target, answer, next_stage


def stage_results(search_dir: str | os.PathLike) -> list[StageResult]:
    """The completed stages (stage 0 included) as the planner's plain results."""
    return [StageResult(r.stage, float(r.rate or 0.0), r.val_metric, r.latency_p50_ms, r.speedup_pct,
                        r.param_reduction_pct)
            for r in ledger.stage_rows(search_dir) if r.status == "completed"]


def planned_stage(cfg, search_dir: str | os.PathLike) -> NextStage | None:
    """The next rate stage of the search (None: it is over), from the config and the ledger."""
    return next_stage(cfg.search.rates, stage_results(search_dir), Target.of(cfg.search.target))


def target_answer(cfg, search_dir: str | os.PathLike) -> Answer | None:
    """The answer to the config's target from the completed stages (None without a target or a baseline)."""
    target = Target.of(cfg.search.target)
    return None if target is None else answer(stage_results(search_dir), target)


def max_stages(cfg) -> int:
    """The most rate stages the search can run (configured rates, plus refined ones under a target)."""
    target = cfg.search.target
    return len(cfg.search.rates) + (int(target.refine) if target is not None else 0)
