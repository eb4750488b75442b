#!/usr/bin/env bash
# Look at a search in MLflow's UI as a person would: headless Chromium screenshots of the experiment's
# runs table, one trial run, the search run's charts and trade-off figure, and the model registry.
#
#   benchmarks/mlflow_screenshots.sh SEARCH_DIR [OUT_DIR]
#
# SEARCH_DIR: a finished search with the default sqlite store (<storage>/<name>/mlflow.db), e.g. the
# one `make demo` writes. OUT_DIR (default SEARCH_DIR/screenshots) receives 1600x1000 PNGs:
#   1-runs-table.png  2-trial.png  3-search-charts.png  4-tradeoff.png  5-registry.png  6-model-version.png
# Needs Debian's `chromium` (apt-get install -y chromium). The `mlflow ui` server started here is
# stopped by its PID (process group) on exit; nothing else is touched.
set -euo pipefail

search_dir=$(cd "${1:?usage: $0 SEARCH_DIR [OUT_DIR]}" && pwd)
out=${2:-$search_dir/screenshots}
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
mlflow=${MLFLOW:-$here/.venv/bin/mlflow}
chromium=${CHROMIUM:-chromium}
port=${PORT:-$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
uri="sqlite:///$search_dir/mlflow.db"
base="http://127.0.0.1:$port"
mkdir -p "$out"
[ -f "$search_dir/mlflow.db" ] || { echo "$0: $search_dir/mlflow.db not found; expected a search with the default store" >&2; exit 2; }

setsid "$mlflow" ui --backend-store-uri "$uri" --host 127.0.0.1 --port "$port" --workers 1 \
    >"$out/mlflow-ui.log" 2>&1 &
server=$!
profile=$(mktemp -d)
cleanup() { kill -TERM -- "-$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$profile"; }
trap cleanup EXIT

for _ in $(seq 120); do
    curl -sf "$base/health" >/dev/null 2>&1 && break
    sleep 1
done
curl -sf "$base/health" >/dev/null || { echo "$0: mlflow ui did not start (see $out/mlflow-ui.log)" >&2; exit 1; }

# experiment id, the search run, a winning trial of the highest rate, the registered model
read -r exp search trial model < <("$python" - "$uri" "$search_dir" <<'EOF'
import json, sys
from pathlib import Path
from mlflow.tracking import MlflowClient

uri, folder = sys.argv[1], Path(sys.argv[2])
name = json.loads((folder / "search.json").read_text())["name"]
client = MlflowClient(uri, registry_uri=uri)
exp = client.get_experiment_by_name(name)
runs = client.search_runs([exp.experiment_id], max_results=1000)
search = next(r for r in runs if r.data.tags.get("s4op.kind") == "search")
trials = [r for r in runs if r.data.tags.get("s4op.kind") == "trial" and r.data.tags.get("s4op.is_best") == "True"]
trial = max(trials, key=lambda r: int(r.data.tags["s4op.key"].split("/stage-")[1].split("/")[0]))  # highest rate
print(exp.experiment_id, search.info.run_id, trial.info.run_id, "s4op-" + name)
EOF
)

mode="workflowType=machine_learning"  # MLflow's "Model training" mode (registry in the sidebar)
shot() {  # shot FILE URL [BUDGET_MS]
    "$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$profile" --hide-scrollbars --window-size=1600,1000 \
        --virtual-time-budget="${3:-20000}" --screenshot="$out/$1" "$2" >/dev/null 2>&1 &
    local pid=$!
    wait "$pid" || echo "$0: chromium failed on $2" >&2
    echo "$out/$1  <-  $2"
}

shot 1-runs-table.png "$base/#/experiments/$exp/runs?$mode"
shot 2-trial.png "$base/#/experiments/$exp/runs/$trial?$mode"
shot 3-search-charts.png "$base/#/experiments/$exp/runs/$search/model-metrics?$mode" 90000
shot 4-tradeoff.png "$base/#/experiments/$exp/runs/$search/artifactPath/tradeoff.png?$mode"
shot 5-registry.png "$base/#/models/$model?$mode"
shot 6-model-version.png "$base/#/models/$model/versions/$("$python" -c "
from mlflow import MlflowClient; c = MlflowClient('$uri', registry_uri='$uri')
print(max(int(v.version) for v in c.search_model_versions(\"name='$model'\")))")?$mode"
