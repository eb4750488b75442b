#!/usr/bin/env bash
# GPU check (issue 20): do trials really train on their GPU share? Run on a machine with a CUDA GPU
# (the `device` tool), from the repository root:
#
#     bash benchmarks/gpu_check.sh            # PY=python3 / .venv/bin/python, OUT=a temporary folder
#
# 1. trains a small listops baseline with `s4op train --device cuda` (bf16), 2. runs a tiny search
# from it with resources.gpu=0.5, latency.device=cuda and search.finetune.precision=bf16 (4 seeds at
# one rate, 2 epochs), 3. prints each trial's train_device, its peak GPU memory and how many trials
# ran at once (from the trials' own final reports), 4. times the fine-tune step (bench_train_step,
# small shape) on the GPU in bf16 and on all CPU cores in fp32. Any failure, a machine without a
# GPU, a torch without CUDA or a trial that did not train on CUDA stops it with a non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PY:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
OUT=${OUT:-$(mktemp -d /tmp/s4op-gpu-check.XXXXXX)}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
S4OP=("$PY" -m orchestrator.cli)
echo "gpu_check: python $PY, output in $OUT, $(date -u +%Y-%m-%dT%H:%M:%SZ)"

# --- 0. a GPU and a CUDA torch, or stop here -------------------------------------------------
"$PY" - <<'EOF'
import importlib.util, sys
import torch
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: FAILED: torch {torch.__version__} sees no CUDA GPU on this machine "
             f"(torch.version.cuda={torch.version.cuda}); run it on a GPU machine with a CUDA build of torch")
missing = [m for m in ("ray", "mlflow", "typer", "pyarrow", "pandas", "rich", "safetensors", "pydantic", "yaml")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_check: FAILED: {sys.executable} lacks {', '.join(missing)} (carry them as wheels or set PY=)")
n = torch.cuda.device_count()
print(f"gpu_check: torch {torch.__version__}, {n} GPU(s): "
      + ", ".join(torch.cuda.get_device_name(i) for i in range(n)))
EOF
if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; fi

COMMON=(--set "task.data_dir=$OUT/data" --set task.generate.train=1000 --set task.generate.val=200
        --set task.generate.test=200)

# --- 1. the baseline, on the GPU --------------------------------------------------------------
"${S4OP[@]}" train cpu-listops-s4d --device cuda --out "$OUT/baseline" "${COMMON[@]}" \
  --set baseline.train.epochs=2 --set baseline.train.precision=bf16

# --- 2. the tiny search: 4 trials of gpu 0.5 -----------------------------------------------------
"${S4OP[@]}" search cpu-listops-s4d --name gpu-check --storage "$OUT/runs" "${COMMON[@]}" \
  --set "baseline.checkpoint=$OUT/baseline" --set "search.rates=[0.5]" --set "search.seeds=[1,2,3,4]" \
  --set search.finetune.epochs=2 --set search.finetune.precision=bf16 \
  --set resources.gpu=0.5 --set resources.cpu=1 --set resources.max_concurrent=8 \
  --set latency.device=cuda

# --- 3. what the trials report ------------------------------------------------------------------
"$PY" - "$OUT/runs/gpu-check" <<'EOF'
import json, sys
from pathlib import Path

import torch

search = Path(sys.argv[1])
finals = []
for path in sorted(search.glob("stages/stage-*/**/result.json")):
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    finals += [r for r in lines if r.get("final")]
if not finals:
    sys.exit(f"gpu_check: FAILED: no final trial result under {search}/stages")
print(f"{'trial':>10} {'train_device':>34} {'precision':>9} {'peak GPU MiB':>12} {'fit s':>7} {'val':>7}")
spans = []
for r in finals:
    marks = json.loads(r["timings"])["marks"]
    spans.append((marks["entry"], marks["saved"]))
    peak = "-" if r.get("gpu_peak_mb") is None else f"{r['gpu_peak_mb']:.1f}"
    print(f"{r['trial']:>10} {r.get('train_device', '?'):>34} {r.get('precision', '?'):>9} "
          f"{peak:>12} {marks['fit'] - marks['model']:>7.1f} {r['val_metric']:>7.4f}")
edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans], key=lambda e: (e[0], e[1]))
running = most = 0
for _, step in edges:
    running += step
    most = max(most, running)
expected = min(len(finals), int(torch.cuda.device_count() / 0.5))
print(f"trials running at once: {most} (at most {expected} expected: {torch.cuda.device_count()} GPU(s) / 0.5)")
try:
    from orchestrator.ledger import read_trials
    print("ledger train_device:", read_trials(search)["train_device"].tolist())
except Exception as exc:  # informative only: the trials' own reports above are the check
    print(f"ledger train_device: unavailable ({exc})")
bad = [r["trial"] for r in finals if not str(r.get("train_device", "")).startswith("cuda")]
if bad:
    sys.exit(f"gpu_check: FAILED: trials {', '.join(bad)} did not train on CUDA")
if most < 2:
    sys.exit(f"gpu_check: FAILED: gpu 0.5 should pack 2 trials per GPU, at most {most} ran at once")
EOF

# --- 4. the fine-tune step, GPU (bf16) against CPU (fp32, all cores) -----------------------------
"$PY" benchmarks/bench_train_step.py --device cuda --precision bf16 --shapes small --threads 1 --steps 8 \
  | tee "$OUT/step_gpu.txt"
"$PY" benchmarks/bench_train_step.py --device cpu --shapes small --threads "$(nproc)" --steps 8 \
  | tee "$OUT/step_cpu.txt"
"$PY" - "$OUT/step_gpu.txt" "$OUT/step_cpu.txt" <<'EOF'
import json, sys
gpu, cpu = ([json.loads(l[5:]) for l in open(p) if l.startswith("json ")][0] for p in sys.argv[1:3])
print(f"fine-tune step (B={gpu['B']}, L={gpu['L']}, H={gpu['H']}, {gpu['n_layers']} layers): "
      f"GPU bf16 {gpu['ours_ms']:.1f} ms, CPU fp32 {cpu['threads']} threads {cpu['ours_ms']:.1f} ms "
      f"-> GPU {cpu['ours_ms'] / gpu['ours_ms']:.1f}x faster")
EOF
echo "gpu_check: OK"
