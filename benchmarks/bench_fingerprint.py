"""The data fingerprint a start, a resume and every node's data check compute: all bytes vs the stat cache.

    .venv/bin/python benchmarks/bench_fingerprint.py [--mb 1024] [--files 16]

Writes `--files` random files of `--mb` MB in all to a temporary folder, waits until they are older
than `SETTLED_S`, then times `fingerprint(folder)` (every byte read, as `s4op data fingerprint` and
the previous version did at every start) and `fingerprint(folder, cached=True)` twice (the first
reads the bytes and stores the digest in a temporary data cache, the second is what each later start,
resume and node check costs). The page cache is warm for both reads: the uncached figure is the
floor of what re-reading costs (a cold read or a network mount only adds to it).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024)
    parser.add_argument("--files", type=int, default=16)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="s4op-bench-fp-") as tmp:
        os.environ["S4OP_DATA_CACHE"] = str(Path(tmp) / "cache")
        fp = importlib.import_module("workers.data.fingerprint")
        folder = Path(tmp) / "data"
        folder.mkdir()
        per_file = args.mb * (1 << 20) // args.files
        for i in range(args.files):
            (folder / f"part-{i:03d}.parquet").write_bytes(os.urandom(per_file))
        time.sleep(fp.SETTLED_S + 0.1)
        rows = []
        for label, cached in (("every byte (uncached)", False), ("cached, first call (reads, stores)", True),
                              ("cached, later calls (stat only)", True)):
            start = time.perf_counter()
            digest = fp.fingerprint(folder, cached=cached)
            rows.append((label, time.perf_counter() - start, digest))
        assert len({d for _, _, d in rows}) == 1, "the cached digest differs from the uncached one"
    print(f"# bench_fingerprint: {args.mb} MB in {args.files} files, {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, "
          f"load avg {os.getloadavg()[0]:.2f}\n")
    print("| fingerprint | seconds |")
    print("|---|---|")
    for label, seconds, _ in rows:
        print(f"| {label} | {seconds:.4f} |")
    print(f"\nstat cache / every byte: {rows[2][1] / rows[0][1]:.5f} (same digest {rows[0][2][:12]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
