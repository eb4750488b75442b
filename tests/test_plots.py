"""The report's figures and HTML page from a realistic ledger."""

from __future__ import annotations

import base64
import re

import pandas as pd
from PIL import Image
from report_fixtures import write_search

from orchestrator.reports import plots
from orchestrator.reports.table import completed_trials, display_table, kept_matrix, load_search, table_ii
from orchestrator.reports.html import render_report


def _png(path):
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.size


def test_each_plot_is_a_readable_png(tmp_path):
    write_search(tmp_path / "a", rates=(0.3, 0.5, 0.9))
    search = load_search(tmp_path / "a")
    tables = {"a": table_ii(search)}
    paths = [
        plots.plot_metric_vs_rate(tables, tmp_path / "out" / "m.png"),
        plots.plot_latency_vs_rate(tables, tmp_path / "out" / "l.png"),
        plots.plot_pareto({"a": completed_trials(search)}, tmp_path / "out" / "p.png"),
        plots.plot_kept_heatmap(*kept_matrix(search), tmp_path / "out" / "h.png"),
    ]
    for path in paths:
        width, height = _png(path)
        assert width > 300 and height > 150


def test_heatmap_grows_with_layers_and_rates(tmp_path):
    small = plots.plot_kept_heatmap([0.0, 0.5], [[8, 4], [8, 2]], 8, tmp_path / "s.png")
    big = plots.plot_kept_heatmap([0.0, 0.1, 0.3, 0.5, 0.7, 0.9], [[8] * 6] * 8, 8, tmp_path / "b.png")
    (ws, hs), (wb, hb) = _png(small), _png(big)
    assert wb > ws and hb > hs


def test_ablation_bars(tmp_path):
    table = pd.DataFrame({"layer": [-1, 0, 1, 2], "metric_name": "accuracy", "metric": [0.8, 0.5, 0.7, 0.75],
                          "drop": [0, 0.3, 0.1, 0.05], "kept_channels": [None, 8, 8, 8]})
    assert _png(plots.plot_ablation(table, tmp_path / "a.png"))[0] > 200


def test_html_page_embeds_every_figure_and_the_table(tmp_path):
    write_search(tmp_path / "a", rates=(0.5,))
    search = load_search(tmp_path / "a")
    table = table_ii(search)
    fig = plots.plot_metric_vs_rate({"a": table}, tmp_path / "m.png")
    page = render_report("demo", {"Table II": display_table(table)}, [("metric", fig)], tmp_path / "r.html")
    text = page.read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 1 and base64.b64decode(images[0]) == fig.read_bytes()
    assert f"{table.iloc[1].metric * 100:.2f}" in text
    assert "src=\"http" not in text and "<link" not in text  # self contained
