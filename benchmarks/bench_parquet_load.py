"""Peak memory of loading one's own data (task parquet): a generated ~1 GB train.parquet.

    python benchmarks/bench_parquet_load.py [--gb 1.0] [--dir /tmp/s4op-parquet-bench]

Writes train.parquet (list<float>, sequences of 500..1500 steps, row groups of 2048 rows, no
compression, built from numpy offsets + values: no Python object per value) and a small
test.parquet, then loads the folder with `load_task("parquet", ...)` in a fresh process and prints
the file size, the values held, the process's peak RSS (ru_maxrss) before and after loading, and the
seconds taken. The folder is deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

LOADER = """
import json, resource, sys, time
import numpy as np, pyarrow, torch  # what a trial has imported anyway
from workers.data import load_task
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
s = load_task("parquet", sys.argv[1], val_fraction=0.1)
dt = time.perf_counter() - t0
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
held = s.train.x.values.nbytes
print(json.dumps({"rss_before_mb": before / 1024, "rss_peak_mb": after / 1024, "values_mb": held / 2**20,
                  "rows": len(s.train) + len(s.val), "load_s": dt}))
"""


def write_split(path: Path, n_values: int, seed: int, rows_per_group: int = 2048) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    writer, written, rows = None, 0, 0
    while written < n_values:
        lengths = rng.integers(500, 1501, rows_per_group)  # (m,)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)  # (m+1,)
        values = rng.standard_normal(int(offsets[-1]), dtype=np.float32)  # (T,)
        x = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
        table = pa.table({"x": x, "y": pa.array(rng.integers(0, 4, rows_per_group))})
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, compression="none")
        writer.write_table(table, row_group_size=rows_per_group)
        written += int(offsets[-1])
        rows += rows_per_group
    writer.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--dir", default="/tmp/s4op-parquet-bench")
    args = ap.parse_args()
    folder = Path(args.dir)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        t0 = time.perf_counter()
        rows = write_split(folder / "train.parquet", int(args.gb * 2**30 / 4), seed=0)
        write_split(folder / "test.parquet", 200_000, seed=1, rows_per_group=64)
        gen_s = time.perf_counter() - t0
        size = (folder / "train.parquet").stat().st_size
        out = subprocess.run([sys.executable, "-c", LOADER, str(folder)], cwd=ROOT, capture_output=True, text=True,
                             check=True)
        result = json.loads(out.stdout)
        result.update({"train_file_mb": size / 2**20, "train_rows_written": rows, "generate_s": gen_s})
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
