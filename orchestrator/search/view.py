"""What the driver shows: a live line per event (or a rich Live panel on a TTY) and the summary.

Live: stage k of K at rate r, trials running/done/failed, best so far, elapsed and ETA. Summary:
the paper's Table II columns (rate, val/test metric, latency ms and its change %, parameters and
their change %). Changes are against the dense stage 0, negative = faster / fewer, everywhere
(console, status, report, MLflow); the ledger stores `speedup_pct` (positive = faster).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict

_CURRENT = None  # the driver's active SearchView (Tune callbacks are pickled; they look it up)


def _fmt(x, spec: str, missing: str = "-") -> str:
    try:
        return missing if x is None or not math.isfinite(float(x)) else format(float(x), spec)
    except (TypeError, ValueError):
        return missing


class SearchView:
    """Console progress of one search; `live=None` picks rich Live on a TTY, lines otherwise."""

    def __init__(self, *, n_stages: int, search: str = "", live: bool | None = None, stream=None):
        self.n_stages, self.search = n_stages, search
        self.stream = stream or sys.stdout
        self.live_mode = self.stream.isatty() if live is None else live
        self.t0 = time.time()
        self.stage, self.rate, self.n_trials = 0, 0.0, 0
        self.running, self.done, self.failed = set(), set(), set()
        self.paused: set = set()  # seeds waiting at a halving rung (no worker held)
        self.best: dict | None = None
        self.dense: dict | None = None  # stage 0's row: the reference of "within noise"
        self.stage_times: list[float] = []
        self.stage_t0 = time.time()
        self._live = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        global _CURRENT
        _CURRENT = self
        if self.live_mode:
            from rich.live import Live

            self._live = Live(self._panel(), refresh_per_second=2, transient=True)
            self._live.start()

    def stop(self) -> None:
        global _CURRENT
        if self._live is not None:
            self._live.stop()
            self._live = None
        if _CURRENT is self:
            _CURRENT = None

    def _emit(self, line: str) -> None:
        if self._live is not None:
            self._live.console.print(line)
            self._live.update(self._panel())
        else:
            print(line, file=self.stream, flush=True)

    # -- events ------------------------------------------------------------------------------
    def stage_started(self, k: int, rate: float, n_trials: int) -> None:
        self.stage, self.rate, self.n_trials = k, rate, n_trials
        self.running, self.done, self.failed, self.paused = set(), set(), set(), set()
        self.stage_t0 = time.time()
        what = "dense baseline" if k == 0 else f"rate {rate:g}, {n_trials} trials"
        self._emit(f"[{self.elapsed()}] stage {k} of {self.n_stages}: {what}")

    def stage_skipped(self, k: int, rate: float) -> None:
        self._emit(f"[{self.elapsed()}] stage {k} of {self.n_stages} (rate {rate:g}): already completed, skipped")

    def trial_event(self, trial: str, event: str, val_metric=None) -> None:
        """event: start (again after a pause), paused (at a halving rung), done, stopped (at a rung), failed."""
        resumed = event == "start" and trial in self.paused
        if event == "start":
            self.paused.discard(trial)
            self.running.add(trial)
        elif event == "paused":
            self.running.discard(trial)
            self.paused.add(trial)
        elif event in ("done", "stopped", "failed"):
            self.running.discard(trial)
            self.paused.discard(trial)
            (self.failed if event == "failed" else self.done).add(trial)
        what = "kept at its rung, runs on" if resumed else \
            {"paused": "paused at a rung", "stopped": "stopped at a rung"}.get(event, event)
        self._emit(self.status_line() + f"  ({trial} {what}{'' if val_metric is None else ' val ' + _fmt(val_metric, '.4f')})")

    def stage_finished(self, k: int, row) -> None:
        from orchestrator.latency_noise import latency_change_text

        row = row if isinstance(row, dict) else asdict(row)
        if k > 0:
            self.stage_times.append(time.time() - self.stage_t0)
        else:
            self.dense = row
        if self.best is None or k > 0:
            self.best = row
        dense = self.dense or {}
        change = latency_change_text(_negated(row.get("speedup_pct")), row.get("latency_p50_ms"), row.get("latency_p90_ms"),
                                     dense.get("latency_p50_ms"), dense.get("latency_p90_ms"), dense=k == 0)
        change += "" if change in ("-", "within noise") else " %"
        self._emit(f"[{self.elapsed()}] stage {k} done: best {row.get('best_trial_id')} "
                   f"val {_fmt(row.get('val_metric'), '.4f')} test {_fmt(row.get('test_metric'), '.4f')} "
                   f"latency {_fmt(row.get('latency_p50_ms'), '.3f')} ms (change {change}) "
                   f"params {row.get('params')}; ETA {self.eta()}")

    def note(self, text: str) -> None:
        self._emit(f"[{self.elapsed()}] {text}")

    # -- text --------------------------------------------------------------------------------
    def elapsed(self) -> str:
        return _clock(time.time() - self.t0)

    def eta(self) -> str:
        if not self.stage_times:
            return "?"
        left = self.n_stages - self.stage
        return _clock(left * sum(self.stage_times) / len(self.stage_times))

    def status_line(self) -> str:
        best = "-" if self.best is None else f"{self.best.get('best_trial_id')} val {_fmt(self.best.get('val_metric'), '.4f')}"
        return (f"[{self.elapsed()}] stage {self.stage} of {self.n_stages} at rate {self.rate:g}: "
                f"{len(self.running)} running, {f'{len(self.paused)} paused, ' if self.paused else ''}"
                f"{len(self.done)} done, {len(self.failed)} failed of {self.n_trials}; "
                f"best so far {best}; ETA {self.eta()}")

    def _panel(self):
        from rich.text import Text

        return Text(self.status_line())

    def finish(self, stages, *, metric_name: str = "val_metric", protocol: str | None = None) -> None:
        self._emit(summary_table(stages, metric_name=metric_name, protocol=protocol))


def _negated(value):
    """A stored reduction (positive = less) as a change (negative = less); no "-0.0"."""
    try:
        return None if value is None else 0.0 - float(value)
    except (TypeError, ValueError):
        return None


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def summary_table(stages, *, metric_name: str = "val_metric", protocol: str | None = None) -> str:
    """The paper's Table II columns as plain text, one line per stage (`stages`: ledger `StageRow`s);
    changes are against the dense stage 0, negative = faster / fewer; a latency that differs from the
    dense one by less than their p50-p90 spread reads "within noise"; `protocol` (the latency
    protocol line) is printed under the table."""
    from orchestrator.latency_noise import latency_change_text

    head = (f"{'stage':>5} {'rate %':>6} {'val ' + metric_name:>14} {'test':>8} {'latency ms':>11} {'change %':>12} "
            f"{'params':>10} {'change %':>9} {'best':>10}")
    lines = [head, "-" * len(head)]
    ordered = sorted(stages, key=lambda r: r.stage)
    dense = next((r for r in ordered if r.stage == 0), None)
    dense_p50 = dense.latency_p50_ms if dense is not None else None
    dense_p90 = dense.latency_p90_ms if dense is not None else None
    for r in ordered:
        change = latency_change_text(_negated(r.speedup_pct), r.latency_p50_ms, r.latency_p90_ms, dense_p50,
                                     dense_p90, dense=r.stage == 0)
        lines.append(f"{r.stage:>5} {100 * (r.rate or 0.0):>6g} {_fmt(r.val_metric, '.4f'):>14} "
                     f"{_fmt(r.test_metric, '.4f'):>8} {_fmt(r.latency_p50_ms, '.3f'):>11} "
                     f"{change:>12} {'-' if r.params is None else r.params:>10} "
                     f"{_fmt(_negated(r.param_reduction_pct), '+.1f'):>9} {r.best_trial_id or '-':>10}")
    if protocol:
        lines.append(protocol)
    return "\n".join(lines)


class ViewEvents:
    """Trial events (from `search/tune_stage.py`) -> the driver's current SearchView. Holds nothing
    (Tune pickles its callbacks): the view is looked up when an event comes."""

    def trial_started(self, ctx, row) -> None:
        if _CURRENT is not None:
            _CURRENT.trial_event(row.trial_id, "start")

    def trial_result(self, ctx, name: str, result: dict) -> None:
        pass

    def trial_completed(self, name: str, val_metric) -> None:
        if _CURRENT is not None:
            _CURRENT.trial_event(name, "done", val_metric)

    def trial_failed(self, name: str) -> None:
        if _CURRENT is not None:
            _CURRENT.trial_event(name, "failed")

    def trial_paused(self, name: str, val_metric=None) -> None:
        if _CURRENT is not None:
            _CURRENT.trial_event(name, "paused", val_metric)

    def trial_stopped(self, name: str) -> None:
        if _CURRENT is not None and name not in _CURRENT.done:
            _CURRENT.trial_event(name, "stopped")
