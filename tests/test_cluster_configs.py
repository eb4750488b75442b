"""The shipped cluster configs: every YAML parses and carries what cluster/README.md says it does,
and every `s4op ...` command in them or in the README is a real command with real options."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import ray
import typer
import yaml

from orchestrator.cli import app
from search_spaces.config import load_search_config, preset_names

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"
README = CLUSTER / "README.md"
RAY_UP = sorted([*CLUSTER.glob("aws/*.yaml"), *CLUSTER.glob("gcp/*.yaml")])
KUBERAY = sorted(CLUSTER.glob("kuberay/*.yaml"))
SEPARATORS = {";", "&&", "||", "|", "&", ">", ">>", "2>", "2>&1", ")", "("}


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _kube(kind: str) -> list[dict]:
    return [d for p in KUBERAY for d in _docs(p) if d.get("kind") == kind]


def _ray_up(path: Path) -> dict:
    (doc,) = _docs(path)
    return doc


# --- commands --------------------------------------------------------------------------------


def _s4op_invocations(text: str) -> list[list[str]]:
    """Every `s4op ...` command line in a shell text: the args after `s4op` up to a separator."""
    text = re.sub(r"\\\n", " ", text)
    found = []
    for line in text.splitlines():
        line = line.split(" #")[0]
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:
            continue
        for i, tok in enumerate(tokens):
            if tok == "s4op" or tok.endswith("/bin/s4op"):
                args = []
                for t in tokens[i + 1:]:
                    if t in SEPARATORS or t.startswith(">") or t.endswith(";"):
                        if t.endswith(";") and t != ";":
                            args.append(t[:-1])
                        break
                    args.append(t)
                found.append(args)
    return found


def _readme_shell_blocks() -> list[str]:
    return re.findall(r"```(?:bash|sh|shell)\n(.*?)```", README.read_text(), flags=re.S)


def _yaml_command_texts() -> list[tuple[str, str]]:
    texts = []
    for path in RAY_UP:
        cfg = _ray_up(path)
        for key in ("initialization_commands", "setup_commands", "head_setup_commands",
                    "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
            texts += [(f"{path.name}:{key}", cmd) for cmd in cfg.get(key, [])]
    for job in _kube("RayJob"):
        texts.append((f"RayJob {job['metadata']['name']}", job["spec"]["entrypoint"]))
    return texts


def _check_invocation(args: list[str]) -> typer.core.click.Command:
    """Parse `args` with the real CLI (options, arity, required arguments); return the command."""
    root = typer.main.get_command(app)
    ctx = root.make_context("s4op", list(args), resilient_parsing=True)
    cmd, rest, path = root, list(args), ["s4op"]
    while hasattr(cmd, "commands") and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        assert name in cmd.commands, f"`{' '.join(path)}` has no command {name!r}"
        cmd, path = cmd.commands[name], [*path, name]
    if "--help" in rest:
        return cmd
    assert not hasattr(cmd, "commands"), f"`{' '.join(path)}` needs a subcommand"
    known = {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts)}
    for tok in rest:
        if tok.startswith("--"):
            assert tok.split("=")[0] in known, f"`{' '.join(path)}` has no option {tok}"
    cmd.make_context(" ".join(path), rest)  # raises UsageError on a bad/missing value
    del ctx
    return cmd


def test_every_s4op_command_in_configs_and_readme_is_real():
    invocations = [(where, args) for where, text in _yaml_command_texts()
                   for args in _s4op_invocations(text)]
    invocations += [("README", args) for block in _readme_shell_blocks()
                    for args in _s4op_invocations(block)]
    commands = {args[0] for _, args in invocations if args}
    # the docs cover launching, resuming, watching and the local cluster
    assert {"search", "resume", "status", "cluster"} <= commands, commands
    for where, args in invocations:
        try:
            _check_invocation(args)
        except Exception as exc:  # noqa: BLE001 - report which line is wrong
            pytest.fail(f"{where}: `s4op {' '.join(args)}`: {exc}")


def test_command_check_rejects_a_made_up_option_and_command():
    with pytest.raises(AssertionError, match="--no-such"):
        _check_invocation(["search", "cpu-listops-s4d", "--no-such", "1"])
    with pytest.raises(AssertionError, match="frobnicate"):
        _check_invocation(["frobnicate"])
    with pytest.raises(Exception):
        _check_invocation(["resume"])  # missing SEARCH_DIR


def test_searches_in_configs_name_real_presets_and_valid_overrides():
    searches = [args for _, text in _yaml_command_texts() for args in _s4op_invocations(text)
                if args and args[0] == "search"]
    searches += [args for block in _readme_shell_blocks() for args in _s4op_invocations(block)
                 if args and args[0] == "search"]
    assert searches
    for args in searches:
        preset = args[1]
        assert preset in preset_names(), preset
        overrides = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
        load_search_config(preset, overrides)  # raises ConfigError on a bad key or value


# --- ray up ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", RAY_UP, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_ray_up_config_validates_against_rays_schema(path):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    cfg = _ray_up(path)
    jsonschema.validate(cfg, schema)
    assert cfg["head_node_type"] in cfg["available_node_types"]


@pytest.mark.parametrize("path", RAY_UP, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_ray_up_config_has_gpu_workers_package_jobs_api_token_storage_and_mlflow(path):
    cfg = _ray_up(path)
    types = cfg["available_node_types"]
    workers = {k: v for k, v in types.items() if k != cfg["head_node_type"]}
    assert any(v["resources"].get("GPU", 0) >= 1 and v.get("max_workers", 0) >= 1
               for v in workers.values()), "no GPU worker node type"
    assert types[cfg["head_node_type"]]["resources"].get("CPU") == 0  # trials stay off the head
    # Ray on every node matches this client's Ray (a mismatch refuses to connect)
    for image in (cfg["docker"]["image"], cfg["docker"]["head_image"]):
        assert image.startswith(f"rayproject/ray:{ray.__version__}-py311"), image
    # this package is installed on every node, ray[default] (Jobs API) on the head
    setup = " ".join(cfg["setup_commands"])
    assert "pip install" in setup and "~/s4op" in setup
    assert cfg["file_mounts"]["/home/ray/s4op"] == "."
    assert ".venv" in cfg["rsync_exclude"]
    assert f"ray[default]=={ray.__version__}" in " ".join(cfg["head_setup_commands"])
    # token auth on every node, token shipped from ~/.ray/auth_token
    assert "--env RAY_AUTH_MODE=token" in cfg["docker"]["run_options"]
    assert cfg["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in cfg[key] if "ray start" in c]
        assert start and all("RAY_AUTH_MODE=token" in c for c in start), key
    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in head_start
    # the shared search folder is mounted on the host and into the container
    assert any("mount" in c and "/mnt/s4op" in c for c in cfg["initialization_commands"])
    assert "--volume /mnt/s4op:/mnt/s4op" in cfg["docker"]["run_options"]
    # the MLflow server the workers and driver report to
    assert "mlflow server" in head_start and "--port 5000" in head_start
    assert "MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:5000" in " ".join(cfg["worker_start_ray_commands"])


# --- KubeRay -----------------------------------------------------------------------------------


def _containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def _env(container: dict) -> dict:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_every_kuberay_manifest_has_api_version_kind_and_name():
    docs = [d for p in KUBERAY for d in _docs(p)]
    assert {"RayCluster", "RayJob", "PersistentVolumeClaim", "Deployment", "Service"} <= {
        d["kind"] for d in docs}
    for d in docs:
        assert d["apiVersion"] and d["metadata"]["name"], d


def test_raycluster_has_gpu_workers_token_from_secret_shared_volume_and_mlflow():
    (rc,) = _kube("RayCluster")
    spec = rc["spec"]
    assert rc["apiVersion"] == "ray.io/v1" and spec["rayVersion"] == ray.__version__
    assert spec["authOptions"] == {"mode": "token", "secretName": "s4op-ray-auth"}
    # the README creates that Secret with the key KubeRay reads
    assert ("kubectl create secret generic s4op-ray-auth --from-literal=auth_token="
            in README.read_text())
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    groups = spec["workerGroupSpecs"]
    gpu_groups = [g for g in groups if any(
        "nvidia.com/gpu" in c["resources"]["limits"] for c in _containers(g["template"]))]
    assert gpu_groups, "no GPU worker group"
    for g in groups:
        assert g["groupName"] and g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
    (pvc,) = _kube("PersistentVolumeClaim")
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    (svc,) = _kube("Service")
    mlflow_uri = f"http://{svc['metadata']['name']}:{svc['spec']['ports'][0]['port']}"
    for template in [head["template"], *(g["template"] for g in groups)]:
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                  for v in template["spec"]["volumes"] if "persistentVolumeClaim" in v}
        for c in _containers(template):
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert claims[mounts["/mnt/s4op"]] == pvc["metadata"]["name"]
            assert _env(c)["MLFLOW_TRACKING_URI"] == mlflow_uri


def test_rayjobs_target_the_raycluster_and_use_shared_storage_and_mlflow():
    (rc,) = _kube("RayCluster")
    (svc,) = _kube("Service")
    mlflow_uri = f"http://{svc['metadata']['name']}:{svc['spec']['ports'][0]['port']}"
    jobs = {j["metadata"]["name"]: j for j in _kube("RayJob")}
    assert len(jobs) == 2
    search_dirs, resumed = [], []
    for job in jobs.values():
        assert job["spec"]["clusterSelector"] == {"ray.io/cluster": rc["metadata"]["name"]}
        (args,) = _s4op_invocations(job["spec"]["entrypoint"])
        opts = dict(zip(args, args[1:]))
        assert opts["--address"] == "auto"
        if args[0] == "search":
            assert opts["--storage"].startswith("/mnt/s4op/")
            assert "--allow-local-storage" in args and opts["--tracking-uri"] == mlflow_uri
            search_dirs.append(f"{opts['--storage']}/{opts['--name']}")
        else:
            assert args[0] == "resume"
            resumed.append(args[1])
    assert search_dirs == resumed  # the resume job continues the search job's folder


def test_mlflow_server_is_cluster_internal_and_on_the_shared_volume():
    (dep,) = _kube("Deployment")
    (svc,) = _kube("Service")
    assert svc["spec"]["type"] == "ClusterIP"
    args = " ".join(_containers(dep["spec"]["template"])[0]["args"])
    assert "--backend-store-uri=sqlite:////mnt/s4op/" in args
    assert f"--port={svc['spec']['ports'][0]['targetPort']}" in args
