"""`s4op cluster local up|down|status`: a multi-node Ray cluster on 127.0.0.1, stopped by PID."""

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
    head_cpus: float = typer.Option(0.0, "--head-cpus", help="CPUs the head declares (0: no trials on the head)."),
    port: int = typer.Option(0, "--port", help="GCS port of the head (0: a free port)."),
    dashboard: bool = typer.Option(False, "--dashboard/--no-dashboard", help="Start the Ray dashboard on 127.0.0.1."),
    state: Path = typer.Option(None, "--state", help=STATE_HELP),
) -> None:
    """Start the cluster, record its PIDs and print the address and the client environment."""
    from cluster.local import client_env, default_state_path, start_local_cluster

    state_path = state or default_state_path()
    st = start_local_cluster(
        workers, cpus_per_worker=cpus_per_worker, head_cpus=head_cpus,
        state_path=state_path, port=port or None, dashboard=dashboard,
    )
    typer.echo(f"address: {st.address}")
    for node in st.nodes:
        typer.echo(f"  {node.role} {node.index}: pid {node.pid}, {node.cpus:g} CPU, log {node.log}")
    if st.dashboard_url:
        typer.echo(f"dashboard: {st.dashboard_url}")
    typer.echo(f"state: {state_path}")
    typer.echo("connect with:")
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
    """List the recorded nodes and whether each is alive."""
    from cluster.local import default_state_path, load_state, local_cluster_status

    state_path = state or default_state_path()
    st = load_state(state_path)
    if st is None:
        typer.echo(f"no local cluster recorded in {state_path}")
        return
    typer.echo(f"address: {st.address}")
    for row in local_cluster_status(state_path):
        alive = f"alive ({row['processes']} processes)" if row["alive"] else "dead"
        typer.echo(f"  {row['role']} {row['index']}: pid {row['pid']}, {row['cpus']:g} CPU, {alive}")


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")
