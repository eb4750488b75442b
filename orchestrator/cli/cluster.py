"""`s4op cluster local up|down|status|add-worker|remove-worker`: a multi-node Ray cluster on this
machine, stopped by PID."""

from __future__ import annotations

from pathlib import Path

import typer

local_app = typer.Typer(
    help="A head and N worker Ray nodes on this machine, for tests and trying cluster runs.",
    no_args_is_help=True,
)
cluster_app = typer.Typer(help="Run searches on Ray clusters (see cluster/README.md).",
                          no_args_is_help=True)
cluster_app.add_typer(local_app, name="local")

STATE_HELP = "State file recording the nodes (default ~/.s4op/local-cluster.json)."


@local_app.command("up")
def up(
    workers: int = typer.Option(2, "--workers", "-n", help="Worker nodes to start."),
    cpus_per_worker: float = typer.Option(1.0, "--cpus-per-worker", help="CPUs each worker declares."),
    gpus_per_worker: int = typer.Option(0, "--gpus-per-worker", help="GPUs each worker declares (logical without GPUs)."),
    head_cpus: float = typer.Option(0.0, "--head-cpus", help="CPUs the head declares (0: no trials on the head)."),
    port: int = typer.Option(0, "--port", help="GCS port of the head (0: a free port)."),
    dashboard: bool = typer.Option(False, "--dashboard/--no-dashboard", help="Start the Ray dashboard on 127.0.0.1."),
    state: Path = typer.Option(None, "--state", help=STATE_HELP),
    latency_node: str = typer.Option(None, "--latency-node", metavar="RESOURCE",
                                     help="Also start a worker with 1 CPU offering custom resource RESOURCE "
                                          "(a stand-in for a device; latency.node_resources: {RESOURCE: 1})."),
) -> None:
    """Start the cluster, record its PIDs and print the address and the client environment."""
    from cluster.local import default_state_path, start_local_cluster

    state_path = state or default_state_path()
    st = start_local_cluster(
        workers, cpus_per_worker=cpus_per_worker, head_cpus=head_cpus, gpus_per_worker=gpus_per_worker,
        state_path=state_path, port=port or None, dashboard=dashboard, latency_node=latency_node,
    )
    typer.echo(f"address: {st.address}")
    for node in st.nodes:
        typer.echo(f"  {_node_line(node)}, log {node.log}")
    _echo_connect(st, state_path)


def _node_line(node) -> str:
    """`worker 2: pid 123, 1 CPU, 1 GPU, edge-rpi4 1`."""
    gpus = f", {node.gpus:g} GPU" if node.gpus else ""
    offers = "".join(f", {name} {amount:g}" for name, amount in node.resources.items())
    return f"{node.role} {node.index}: pid {node.pid}, {node.cpus:g} CPU{gpus}{offers}"


def _echo_connect(st, state_path: Path) -> None:
    """The dashboard, the state file and the exports another shell needs (client_env)."""
    from cluster.local import client_env

    if st.dashboard_url:
        typer.echo(f"dashboard: {st.dashboard_url} (Jobs API: ray job submit, ray list)")
    else:
        typer.echo("dashboard: off (`up --dashboard` for ray job submit and ray list)")
    typer.echo(f"state: {state_path}")
    typer.echo("connect from another shell with:")
    for key, value in client_env(st).items():
        typer.echo(f"  export {key}={value}")


@local_app.command("down")
def down(
    state: Path = typer.Option(None, "--state", help=STATE_HELP),
    keep_logs: bool = typer.Option(False, "--keep-logs", help="Keep node logs and Ray's temp dir."),
) -> None:
    """Stop exactly the recorded nodes, by their process sessions (never `ray stop`)."""
    from cluster.local import default_state_path, stop_local_cluster

    state_path = state or default_state_path()
    stopped = stop_local_cluster(state_path, keep_logs=keep_logs)
    if not stopped:
        typer.echo(f"no local cluster recorded in {state_path}")
        return
    for pid, procs in stopped.items():
        typer.echo(f"stopped node pid {pid} ({len(procs)} processes)")


@local_app.command("status")
def status(state: Path = typer.Option(None, "--state", help=STATE_HELP)) -> None:
    """Each node: alive or not, its raylet's and other processes' PIDs; the dashboard; the exports."""
    from cluster.local import default_state_path, load_state, local_cluster_status

    state_path = state or default_state_path()
    st = load_state(state_path)
    if st is None:
        typer.echo(f"no local cluster recorded in {state_path}")
        return
    typer.echo(f"address: {st.address}")
    for node, row in zip(st.nodes, local_cluster_status(state_path)):
        if not row["alive"]:
            typer.echo(f"  {_node_line(node)}: dead")
            continue
        typer.echo(f"  {_node_line(node)}: alive, raylet pid {row['raylet_pid']}, "
                   f"{row['processes']} processes")
        others = "; ".join(f"{kind} {','.join(map(str, pids))}" for kind, pids in row["pids"].items()
                           if kind != "raylet")
        typer.echo(f"    {others}")
    _echo_connect(st, state_path)


@local_app.command("add-worker")
def add_worker(
    cpus: float = typer.Option(1.0, "--cpus", help="CPUs the worker declares."),
    gpus: int = typer.Option(0, "--gpus", help="GPUs the worker declares (logical without GPUs)."),
    resources: str = typer.Option(None, "--resources", metavar="JSON",
                                  help='Custom resources, e.g. \'{"edge-rpi4": 1}\'.'),
    state: Path = typer.Option(None, "--state", help=STATE_HELP),
) -> None:
    """Start one more worker node (e.g. to replace a lost one) and record it."""
    from cluster.local import add_worker_node, default_state_path, parse_resources

    node = add_worker_node(state or default_state_path(), cpus=cpus, gpus=gpus,
                           resources=parse_resources(resources))
    typer.echo(f"started {_node_line(node)}, log {node.log}")


@local_app.command("remove-worker")
def remove_worker(
    node: str = typer.Argument(..., metavar="NODE", help="The worker's index (2 or worker-2) or its node pid."),
    state: Path = typer.Option(None, "--state", help=STATE_HELP),
) -> None:
    """Stop one worker node by its process session and drop it from the state file."""
    from cluster.local import default_state_path, remove_worker_node

    gone, pids = remove_worker_node(state or default_state_path(), node)
    typer.echo(f"stopped worker {gone.index}: node pid {gone.pid} ({len(pids)} processes)")


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")
