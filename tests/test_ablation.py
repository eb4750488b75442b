"""Table I: each layer's SSM operators deactivated in turn, evaluated without fine-tuning."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from support import tiny_model

from orchestrator.reports.ablation import ablate_layers, bypass_layer
from orchestrator.cli import main
from search_spaces.errors import ConfigError
from workers.checkpoint import save_checkpoint
from workers.data import generate_task, load_task
from workers.training import evaluate


def _model(bypass="identity"):
    """A pruned 3-layer model for ListOps (18 tokens, 10 classes)."""
    kept = [[0, 1, 2, 5], list(range(8)), [3, 4]]
    return tiny_model(0, kept, bypass, d_input=18, d_output=10, n_layers=3).eval()


def test_bypassed_layer_passes_its_input_and_leaves_the_others():
    model = _model()
    off = bypass_layer(model, 1)
    u = torch.randn(2, 8, 16)  # (B H L)
    with torch.no_grad():
        assert torch.equal(off.blocks[1].conv(u), u)  # every channel of layer 1 bypassed
        for i in (0, 2):
            torch.testing.assert_close(off.blocks[i].conv(u), model.blocks[i].conv(u))
        x = torch.randint(1, 18, (2, 16))
        assert not torch.allclose(off(x), model(x))
    assert model.blocks[1].conv.mask is None  # the original is untouched


def test_zero_bypass_model_drops_the_layer_output():
    off = bypass_layer(_model("zero"), 2)
    with torch.no_grad():
        assert torch.count_nonzero(off.blocks[2].conv(torch.randn(1, 8, 8))) == 0


def test_layer_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match="0..2"):
        bypass_layer(_model(), 3)


@pytest.fixture(scope="module")
def listops(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data") / "listops"
    generate_task("listops", folder, size={"train": 40, "val": 60, "test": 20}, seed=0,
                  options={"min_len": 10, "max_len": 60})
    return folder


def test_table_rows_are_the_evaluations_of_each_ablated_model(listops):
    splits = load_task("listops", listops, max_len=64)
    model = _model()
    table = ablate_layers(model, splits.val, splits.info, batch_size=32)
    assert table["layer"].tolist() == [-1, 0, 1, 2]
    assert table["metric"].iloc[0] == pytest.approx(evaluate(model, splits.val, splits.info, batch_size=32))
    for i in range(3):
        expected = evaluate(bypass_layer(model, i), splits.val, splits.info, batch_size=32)
        row = table[table["layer"] == i].iloc[0]
        assert row.metric == pytest.approx(expected)
        assert row["drop"] == pytest.approx(table["metric"].iloc[0] - expected)
    assert table["kept_channels"].tolist()[1:] == [4, 8, 2]


def test_cli_writes_table_and_bar_plot(listops, tmp_path, capsys):
    model = _model()
    save_checkpoint(model, tmp_path / "ck", task="listops")
    with pytest.raises(SystemExit) as info:
        main(["ablate-layers", str(tmp_path / "ck"), "--data", str(listops), "--max-len", "64",
              "--out", str(tmp_path / "out")])
        raise SystemExit(0)
    out = capsys.readouterr().out
    assert info.value.code == 0
    assert "layer 2 off" in out and "baseline" in out
    table = pd.read_csv(tmp_path / "out" / "table_i.csv")
    splits = load_task("listops", listops, max_len=64)
    assert table["metric"].iloc[0] == pytest.approx(evaluate(model, splits.val, splits.info))
    assert np.isfinite(table["metric"]).all()
    assert (tmp_path / "out" / "ablation.png").stat().st_size > 1000


def test_cli_without_data_or_search_config_exits_2(tmp_path, capsys):
    save_checkpoint(_model(), tmp_path / "ck", task="listops")
    with pytest.raises(SystemExit) as info:
        main(["ablate-layers", str(tmp_path / "ck")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--data" in err and err.count("\n") == 1
