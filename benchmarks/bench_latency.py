"""Issue 2's latency figures: the commands recorded in benchmarks/RESULTS.md, in one script.

    .venv/bin/python benchmarks/bench_latency.py [--out DIR] [--repeats N] [--quick]

Runs `s4op bench latency` for (1) listops-s4d at every rate and both bypass modes, (2) dense
listops-s4d with cached vs per-forward kernels, (3) listops-s4 at every rate; 1 thread, batch 1,
CPU. Each JSON result goes to DIR (default s4op-runs/bench/) and the target verdicts are printed.
--quick shortens the sequences to 256 and uses fewer rates (a smoke run, not a figure).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUNS = {
    "listops-s4d-rates": ["--preset", "listops-s4d"],
    "listops-s4d-kernels": ["--preset", "listops-s4d", "--rates", "0", "--bypass", "identity",
                            "--kernel", "cached,per-forward"],
    "listops-s4-rates": ["--preset", "listops-s4"],
}


def main() -> None:
    from orchestrator.cli import main as s4op

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "s4op-runs" / "bench"))  # git-ignored
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, argv in RUNS.items():
        argv = ["bench", "latency", *argv, "--repeats", str(args.repeats), "--json"]
        if args.quick:
            argv += ["--length", "256"] + ([] if "--rates" in argv else ["--rates", "0,0.7"])
        print("s4op " + " ".join(argv), flush=True)
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            s4op(argv)
        result = json.loads(buffer.getvalue())
        (out / f"{name}.json").write_text(json.dumps(result, indent=1))
        for clock, found in result["targets"].items():
            for target, t in found.items():
                print(f"  {target} ({clock}): {t['value']:.3f} want {t['target']}: {'met' if t['met'] else 'MISSED'}")


if __name__ == "__main__":
    main()
