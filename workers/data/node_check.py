"""Can this node read the search's data, and is it the same data? The body of the per-node check.

Before any trial the driver runs `node_data_report` on every alive node (`orchestrator/search/nodes.py`,
pinned by node id); each reports its host facts (`workers.node_identity.host_facts`) with the data's
fingerprint as read there, or the one-line reason it could not read it. `data_refusal` (pure) turns
those reports into the driver's one-line refusal, naming the first node that failed.
"""

from __future__ import annotations

from typing import Iterable, Mapping


def node_data_report(data_dir: str, expected: str) -> dict:
    """Host facts + {fingerprint, error} of `data_dir` as read on this node (a URI: fetched into its cache)."""
    from search_spaces.errors import S4opError
    from workers.data.fingerprint import fingerprint
    from workers.data.node_cache import node_data
    from workers.node_identity import host_facts

    report = {**host_facts(), "fingerprint": None, "error": None}
    try:
        found = node_data(data_dir, expected)
        report["fingerprint"] = found.fingerprint or fingerprint(found.path, cached=True)  # a URI's copy: fingerprinted when fetched
    except S4opError as exc:
        report["error"] = str(exc)
    except Exception as exc:  # noqa: BLE001 - any failure to read is this node's answer, in one line
        report["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return report


def node_label(report: Mapping) -> str:
    """`host (IP, node 1a2b3c4d)` for messages and tables."""
    node_id = str(report.get("node_id") or "?")[:8]
    return f"{report.get('hostname') or '?'} ({report.get('node_ip') or '?'}, node {node_id})"


def data_refusal(reports: Iterable[Mapping], data_dir: str, expected: str) -> str | None:
    """The driver's one-line refusal for the first node that cannot read `data_dir` or reads other
    data than the driver (fingerprint `expected`); None when every node reads the same data."""
    for report in reports:
        if report.get("error"):
            reason = str(report["error"]).splitlines()[0]
            return (f"task.data_dir={data_dir}: node {node_label(report)} cannot read it ({reason}); use a path "
                    "every node mounts or an s3:// / gs:// URI (cluster/README.md, \"Where data goes\")")
        if report.get("fingerprint") != expected:
            return (f"task.data_dir={data_dir}: node {node_label(report)} reads other data (fingerprint "
                    f"{str(report.get('fingerprint'))[:12]}, the driver's {expected[:12]}); give every node the "
                    "same files (cluster/README.md, \"Where data goes\")")
    return None
