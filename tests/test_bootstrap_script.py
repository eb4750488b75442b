"""The paired bootstrap behind REPRODUCTION.md's intervals."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

spec = importlib.util.spec_from_file_location(
    "bootstrap_table_ii", Path(__file__).parents[1] / "benchmarks" / "bootstrap_table_ii.py")
bootstrap = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bootstrap)


def test_paired_bootstrap_intervals_contain_the_estimate_and_pairing_narrows_the_difference():
    rng = np.random.default_rng(1)
    dense = (rng.random(500) < 0.4).astype(float)
    same_but_5 = dense.copy()
    same_but_5[np.flatnonzero(dense == 0)[:5]] = 1.0  # 5 more right, nothing else changed
    out = bootstrap.paired_bootstrap({0.0: dense, 0.3: same_but_5}, 0.0, resamples=500, seed=0)
    m, lo, hi, d, dlo, dhi = out[0.3]
    assert lo <= m <= hi and (hi - lo) > 0.05  # ~ +-4 points on 500 examples
    assert abs(d - 0.01) < 1e-12 and 0.0 <= dlo <= d <= dhi <= 0.021  # paired: the difference is tight
    assert out[0.0][3:] == (0.0, 0.0, 0.0)
