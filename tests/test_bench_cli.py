"""`s4op bench latency`: presets of the paper's sizes, pruned models, JSON rows, one-line errors."""

from __future__ import annotations

import json

import pytest
import torch

from orchestrator.cli import main
from search_spaces.allocation import allocate
from workers import bench
from workers.pruning import count_parameters

FAST = ["bench", "latency", "--preset", "ecg-s4d", "--length", "16", "--repeats", "30", "--warmup", "1"]


def run(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def run_ok(capsys, argv):
    main(argv)
    return capsys.readouterr().out


def test_json_is_one_object_with_a_row_per_bypass_kernel_rate_and_batch(capsys):
    out = run_ok(capsys, FAST + ["--rates", "0,0.5", "--batch-sizes", "1,2", "--json"])
    result = json.loads(out)  # the whole stdout is one JSON object
    assert set(result) >= {"machine", "rows", "breakdown", "targets"}
    assert result["machine"]["threads"] == 1 and result["machine"]["device"] == "cpu"
    rows = result["rows"]
    assert len(rows) == 2 * 2 * 2  # bypass x rate x batch (kernel: cached by default)
    required = {"preset", "bypass", "kernel", "rate", "batch", "threads", "length", "p50_ms", "p90_ms",
                "ideal_ms", "params"}
    for row in rows:
        assert required <= set(row)
        assert row["preset"] == "ecg-s4d" and row["length"] == 16 and row["threads"] == 1
        assert 0 < row["p50_ms"] <= row["p90_ms"]
    dense = [r for r in rows if r["rate"] == 0.0]
    assert all(r["params"] == 202_118 for r in dense)  # the paper's ECG S4D count
    for prefix, figure in (("", "p50_ms"), ("cpu_", "cpu_p50_ms"), ("min_", "min_ms")):
        for r in dense:  # fixed + ssm = dense on every clock (unless noise made ssm < 0, clipped)
            assert r[f"{prefix}ideal_ms"] == pytest.approx(r[figure]) or r[f"{prefix}ideal_ms"] > r[figure]
            assert r[f"{prefix}ratio_to_dense"] == 1.0
    half = {(r["bypass"], r["kernel"], r["batch"]): r for r in rows if r["rate"] == 0.5}
    assert half["zero", "cached", 1]["params"] < half["identity", "cached", 1]["params"] < 202_118
    assert [(b["kernel"], b["batch"]) for b in result["breakdown"]] == [("cached", 1), ("cached", 2)]
    for b in result["breakdown"]:
        assert b["total_ms"] == pytest.approx(b["fixed_ms"] + b["ssm_ms"]) or b["ssm_ms"] == 0.0
    assert set(result["targets"]) == {"wall", "cpu", "min"}
    assert "zero_at_70" not in result["targets"]["wall"]  # the run has no 70 % row to judge


def test_per_forward_kernel_is_timed_next_to_cached_and_slower(capsys):
    out = run_ok(capsys, FAST + ["--rates", "0", "--bypass", "identity", "--kernel", "cached,per-forward", "--json"])
    result = json.loads(out)
    p50 = {r["kernel"]: r["min_ms"] for r in result["rows"]}
    assert set(p50) == {"cached", "per-forward"}
    assert p50["per-forward"] > p50["cached"]  # regenerating K each call costs time
    speedup = result["targets"]["min"]["cached_speedup"]
    assert speedup["value"] == pytest.approx(p50["per-forward"] / p50["cached"])
    assert "identity_within_ideal" not in result["targets"]["min"]  # no pruned row to judge


def test_table_output_names_the_breakdown_and_rates(capsys):
    out = run_ok(capsys, FAST + ["--rates", "0,0.3", "--bypass", "identity"])
    assert "fixed parts vs SSM convolution" in out
    assert "ideal" in out and "0.30" in out and "identity" in out


@pytest.mark.parametrize("argv, words", [
    (["--preset", "listops-s5"], ["--preset", "'listops-s5'", "listops-s4d"]),
    (["--rates", "0,1.0"], ["--rates", "'1.0'", "[0, 1)"]),
    (["--rates", "0,-0.1"], ["--rates", "'-0.1'"]),
    (["--rates", "0,,0.3"], ["--rates", "'0,,0.3'"]),
    (["--rates", "half"], ["--rates", "'half'"]),
    (["--batch-sizes", "1,0"], ["--batch-sizes", "'0'"]),
    (["--batch-sizes", "1;8"], ["--batch-sizes", "'1;8'"]),
    (["--bypass", "identity,skip"], ["--bypass", "'skip'", "identity,zero"]),
    (["--kernel", "cached,lazy"], ["--kernel", "'lazy'", "cached,per-forward"]),
    (["--repeats", "29"], ["--repeats", "29", ">= 30"]),
    (["--threads", "0"], ["--threads", "0"]),
])
def test_bad_input_is_one_line_naming_option_and_value_exit_2(capsys, argv, words):
    code, out, err = run(capsys, ["bench", "latency"] + argv + ["--json"])
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("s4op: error:")
    for word in words:
        assert word in lines[0]


def test_presets_have_the_paper_sizes():
    names = bench.preset_names()
    assert len(names) == 8 and "listops-s4d" in names and "ecg-s4" in names
    expected = {"listops-s4d": 402_954, "listops-s4": 401_418, "ecg-s4d": 202_118}  # paper Table II
    for name, params in expected.items():
        assert count_parameters(bench.dense_model(bench.bench_preset(name))) == params
    imdb = bench.bench_preset("imdb-s4d")
    assert (imdb.spec.d_input, imdb.spec.d_output, imdb.length, imdb.spec.prenorm) == (257, 2, 4096, True)
    pf = bench.bench_preset("pathfinder-s4")
    assert (pf.spec.input_kind, pf.spec.d_input, pf.length, pf.spec.kind) == ("real", 1, 1024, "s4")


def test_pruned_model_uses_depth_aware_counts_and_seeded_channels():
    spec = bench.bench_preset("ecg-s4d").spec
    kept = bench.pruned_kept(spec, 0.7, seed=3)
    counts = allocate("depth-aware", 0.7, spec.n_layers, spec.d_model, base=2.0, seed=3)
    assert [spec.d_model - len(k) for k in kept] == counts
    assert kept == bench.pruned_kept(spec, 0.7, seed=3)
    assert kept != bench.pruned_kept(spec, 0.7, seed=4)
    dense = bench.dense_model(bench.bench_preset("ecg-s4d"))
    model = bench.pruned_model(dense, 0.7, "identity", seed=3)
    assert [b.conv.kept.tolist() for b in model.blocks] == kept


def test_without_ssm_equals_the_model_with_every_operator_pruned_to_identity():
    """The 'fixed' model used for the breakdown is the dense model minus its SSM operators."""
    preset = bench.bench_preset("ecg-s4d")
    dense = bench.dense_model(preset)
    x, lengths = bench.example_input(preset.spec, 2, 16)
    fixed = bench.without_ssm(dense)
    with torch.no_grad():
        h = dense.encoder(x).transpose(1, 2)  # (B H L)
        for block in dense.blocks:
            z = block.activation(h)  # SSM operator skipped: its input passes through
            h = block.norm(h + block._mix(z))  # post-norm blocks
        expected = dense.decoder(h.mean(-1))
        torch.testing.assert_close(fixed(x, lengths), expected)
        assert not torch.allclose(dense(x, lengths), expected)


def test_targets_are_judged_from_the_rows():
    def row(kernel, bypass, rate, p50, ideal=None):
        return {"kernel": kernel, "bypass": bypass, "rate": rate, "batch": 1, "p50_ms": p50,
                "ratio_to_ideal": p50 / (ideal or p50), "ratio_to_dense": p50 / 10.0}

    rows = [row("cached", "identity", 0.0, 10.0), row("cached", "identity", 0.7, 6.0, ideal=5.0),
            row("cached", "zero", 0.7, 4.0), row("per-forward", "identity", 0.0, 250.0)]
    t = bench.targets(rows, "wall")
    assert t["cached_speedup"]["value"] == pytest.approx(25.0) and t["cached_speedup"]["met"]
    assert t["identity_within_ideal"]["value"] == pytest.approx(0.2) and not t["identity_within_ideal"]["met"]
    assert t["zero_at_70"]["value"] == pytest.approx(0.4) and t["zero_at_70"]["met"]
