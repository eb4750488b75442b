"""Whether a latency change is real or within the measurement's own spread, and the protocol line.

Pure: a pruned model's latency p50 that differs from the dense p50 by less than the spread of the
runs (p90 - p50, the larger of the two models') is reported as "within noise", never as a signed
percentage. The console table, `s4op status` and `s4op report` all use `latency_change_text`; each
keeps its own sign (speedup, positive = faster; or change, negative = faster).
"""

from __future__ import annotations

import math

WITHIN_NOISE = "within noise"
# a latency node that shares cores with another Ray node (`workers.node_identity.shares_cores`): ledger
# column latency_shared_cores; `s4op status` and the report say this
SHARED_CORES_NOTE = ("latency measured on a node sharing CPU cores with another Ray node of the same machine "
                     "(a local cluster): the figures are noisy, compare them with care")


def _finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def within_noise(p50, p90, dense_p50, dense_p90) -> bool:
    """|p50 - dense_p50| < max(p90 - p50, dense_p90 - dense_p50); False when a figure is missing."""
    if not all(_finite(v) for v in (p50, p90, dense_p50, dense_p90)):
        return False
    spread = max(float(p90) - float(p50), float(dense_p90) - float(dense_p50), 0.0)
    return abs(float(p50) - float(dense_p50)) < spread


def latency_change_text(pct, p50, p90, dense_p50, dense_p90, *, spec: str = "+.1f", dense: bool = False) -> str:
    """`pct` formatted with `spec`, or "within noise" when the two latencies differ by less than their
    spread; "-" when pct is missing. The dense row itself (`dense=True`) always shows its number."""
    if not _finite(pct):
        return "-"
    if not dense and within_noise(p50, p90, dense_p50, dense_p90):
        return WITHIN_NOISE
    return format(float(pct), spec)


def latency_protocol_line(*, device, threads, batch, length, repeats, warmup=None) -> str:
    """One line naming the latency protocol a table's figures were measured under."""
    def show(v):
        return "?" if v is None or (isinstance(v, float) and not math.isfinite(v)) else str(int(v)) \
            if isinstance(v, (int, float)) else str(v)
    warm = "" if warmup is None else f" after {show(warmup)} warm-up"
    return (f"latency protocol: device {device or '?'}, {show(threads)} thread(s), batch {show(batch)}, "
            f"length {show(length)}, p50/p90 of {show(repeats)} timed runs{warm}; "
            f"'{WITHIN_NOISE}': the p50 differs from dense by less than the p90 - p50 spread")


def protocol_from_config(latency, length) -> str:
    """`latency_protocol_line` for a config's `latency` section (first batch size) at `length`."""
    return latency_protocol_line(device=latency.device, threads=latency.threads, batch=latency.batch_sizes[0],
                                 length=length, repeats=latency.repeats, warmup=latency.warmup)
