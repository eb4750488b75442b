"""`s4op report`: files, console table, --compare, and logging to the search's MLflow parent run."""

from __future__ import annotations

import time

import pandas as pd
import pytest
from mlflow import MlflowClient
from report_fixtures import write_search

from orchestrator.cli import main
from orchestrator.reports.pipeline import build_report
from orchestrator.tracking.client import default_tracking_uri


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
        raise SystemExit(0)
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def test_report_writes_tables_plots_html_and_prints_markdown(tmp_path, capsys):
    write_search(tmp_path / "s", name="demo", rates=(0.3, 0.9))
    code, out, err = _run(["report", str(tmp_path / "s"), "--out", str(tmp_path / "r")], capsys)
    assert code == 0, err
    assert "| 90 %" in out and "test accuracy %" in out
    names = {p.name for p in (tmp_path / "r").iterdir()}
    assert {"table_ii.csv", "table_ii.parquet", "metric_vs_rate.png", "latency_vs_rate.png", "pareto.png",
            "kept_heatmap.png", "report.html"} <= names
    assert pd.read_parquet(tmp_path / "r" / "table_ii.parquet")["rate"].tolist() == [0.0, 0.3, 0.9]
    assert "report not logged" not in err and "logged to MLflow" not in out  # MLflow only with --log-to-mlflow
    code, out, err = _run(["report", str(tmp_path / "s"), "--out", str(tmp_path / "r"), "--log-to-mlflow"], capsys)
    assert code == 0 and "report not logged" in err  # no MLflow store: a warning, not a failure


def test_compare_puts_both_searches_in_one_table(tmp_path, capsys):
    write_search(tmp_path / "a", name="incremental", rates=(0.5,))
    write_search(tmp_path / "b", name="one-shot", rates=(0.5, 0.9))
    code, out, err = _run(["report", str(tmp_path / "a"), "--compare", str(tmp_path / "b")], capsys)
    assert code == 0, err
    assert "## incremental" in out and "## one-shot" in out
    both = pd.read_csv(tmp_path / "a" / "report" / "table_ii_compare.csv")
    assert both.groupby("label").size().to_dict() == {"incremental": 2, "one-shot": 3}
    assert (tmp_path / "a" / "report" / "kept_heatmap_1.png").is_file()


def test_no_completed_stage_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = _run(["report", str(tmp_path / "empty")], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "s4op: error:" in err and "stage" in err


def test_report_is_logged_to_the_parent_run(tmp_path):
    folder = tmp_path / "s"
    write_search(folder, name="demo", rates=(0.5,))
    uri = default_tracking_uri(folder)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("demo", artifact_location=(folder / "mlartifacts").as_uri())
    parent = client.create_run(experiment, tags={"s4op.key": "demo"}).info.run_id
    client.create_run(experiment, tags={"s4op.key": "demo/stage-1", "mlflow.parentRunId": parent})
    plain = build_report(folder)  # by default MLflow is not touched
    assert plain["mlflow_run_id"] is None and plain["versions"] == {}
    assert not client.list_artifacts(parent) and not client.search_registered_models()
    result = build_report(folder, log_to_mlflow=True)
    assert result["mlflow_run_id"] == parent and result["versions"] == {}
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/pareto.png", "report/report.html", "report/table_ii.csv"} <= logged
    assert not client.search_registered_models()  # logging the report never registers


def test_unreachable_mlflow_warns_and_the_report_is_still_written(tmp_path, capsys):
    write_search(tmp_path / "s", name="demo", rates=(0.5,))
    start = time.monotonic()
    result = build_report(tmp_path / "s", tracking_uri="http://127.0.0.1:9", log_to_mlflow=True)
    assert result["mlflow_run_id"] is None
    assert (result["out"] / "report.html").is_file()
    assert "unreachable" in capsys.readouterr().err
    assert time.monotonic() - start < 30


def test_report_registers_every_stage_and_skips_an_altered_checkpoint(tmp_path, capsys):
    from report_fixtures import write_real_search

    from test_registry import load_registered

    folder = tmp_path / "s"
    models = write_real_search(folder, name="real", rates=(0.5, 0.9))
    (folder / "stages" / "stage-2" / "best" / "model.json").write_text("{}")  # altered after the search
    uri = default_tracking_uri(folder)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("real", artifact_location=(tmp_path / "art").as_uri())
    client.create_run(experiment, tags={"s4op.key": "real"})
    result = build_report(folder, register=True)
    assert sorted(result["versions"]) == [0.0, 0.5]
    assert "stage 2 (rate 0.9) not registered" in capsys.readouterr().err
    import numpy as np
    import torch

    x = np.random.default_rng(0).integers(1, 10, size=(2, 32)).astype(np.int64)
    with torch.no_grad():
        expected = models[1](torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(load_registered(uri, "real", 0.5).predict(x), expected, atol=1e-5)
    assert build_report(folder, register=True)["versions"] == result["versions"]  # idempotent: same versions again
    version = client.get_model_version_by_alias("s4op-real", "rate-50")
    assert version.tags["rate_pct"] == "50" and "latency_p50_ms" in version.tags and "n_params" in version.tags
    assert any(k.startswith("val_") for k in version.tags) and str(folder) not in version.description
