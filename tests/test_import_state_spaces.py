"""`s4op import --from state-spaces` and `--format state-spaces`: the S4 authors' example.py layout.

Proof: a model built with our own re-implementation of their layout (tests/state_spaces_ref.py),
saved with torch.save(state_dict), imported, gives the same logits within 1e-5 (float32); a pruned
model written back loads into that layout strictly and gives the pruned model's logits.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from search_spaces.errors import CheckpointError, ConfigError
from workers.checkpoint import load_checkpoint, save_checkpoint
from workers.interop.importer import export_state_spaces, import_state_spaces
from workers.models import ModelSpec, S4Model
from workers.pruning import compact

sys.path.insert(0, str(Path(__file__).parent))
from state_spaces_ref import ExampleModel  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {
    "s4d": dict(layer="s4d"),
    "s4-diag": dict(layer="s4block", mode="diag"),
    "s4-dplr": dict(layer="s4block", mode="dplr", l_kernel=64),
}


def reference(kind: str, prenorm: bool, seed: int = 0, **extra) -> ExampleModel:
    torch.manual_seed(seed)
    args = {**LAYERS[kind], **extra}
    return ExampleModel(3, 5, 8, 3, N=8, prenorm=prenorm, **args).eval()


def saved(model, tmp_path, name="model.pt", wrap=False) -> Path:
    path = tmp_path / name
    sd = model.state_dict()
    torch.save({"model": sd, "acc": 0.5, "epoch": 3} if wrap else sd, path)
    return path


def logits(model, x):
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("prenorm", [False, True], ids=["postnorm", "prenorm"])
@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_imported_model_gives_the_same_logits(tmp_path, kind, prenorm):
    ref = reference(kind, prenorm)
    out = tmp_path / "imported"
    r = import_state_spaces(saved(ref, tmp_path, wrap=kind == "s4d"), out, prenorm=prenorm)
    model, meta = load_checkpoint(out)
    assert meta["extra"]["state_spaces"]["layer"] == {"s4d": "s4d-minimal", "s4-diag": "s4block-diag",
                                                      "s4-dplr": "s4block-dplr"}[kind]
    assert (model.spec.n_layers, model.spec.d_model, model.spec.d_state, model.spec.d_input, model.spec.d_output) == \
        (3, 8, 8, 3, 5) and model.spec.prenorm == prenorm and r["spec"]["kind"] == ("s4" if kind == "s4-dplr" else "s4d")
    x = torch.randn(4, 40, 3)
    diff = (logits(ref, x) - logits(model, x)).abs().max().item()
    assert diff < 1e-5
    other = S4Model(model.spec)  # a fresh model of the same spec is far off: the check can fail
    assert (logits(ref, x) - logits(other, x)).abs().max().item() > 1e-3


@pytest.mark.parametrize("variant", ["bidirectional-dplr", "batchnorm-diag", "tokens-s4d", "tied-ssm", "fresh-dplr"])
def test_inferred_variants_match(tmp_path, variant):
    extra, kind, tokens = {}, "s4-diag", False
    if variant == "bidirectional-dplr":
        kind, extra = "s4-dplr", {"bidirectional": True}
    elif variant == "batchnorm-diag":
        extra = {"norm": "batch"}
    elif variant == "tokens-s4d":
        kind, tokens = "s4d", True
    elif variant == "tied-ssm":
        extra = {"n_ssm": 2}
    elif variant == "fresh-dplr":
        kind, extra = "s4-dplr", {"l_kernel": 0}
    torch.manual_seed(1)
    ref = ExampleModel(7 if tokens else 3, 4, 8, 2, N=8, tokens=tokens, **{**LAYERS[kind], **extra}).eval()
    out = tmp_path / "m"
    import_state_spaces(saved(ref, tmp_path), out)
    model, meta = load_checkpoint(out)
    x = torch.randint(0, 7, (3, 33)) if tokens else torch.randn(3, 33, 3)
    assert (logits(ref, x) - logits(model, x)).abs().max().item() < 1e-5
    lay = meta["extra"]["state_spaces"]
    assert lay["bidirectional"] == (variant == "bidirectional-dplr") and model.spec.bidirectional == lay["bidirectional"]
    assert lay["norm"] == ("batch" if variant == "batchnorm-diag" else "layer")
    assert lay["input_kind"] == ("tokens" if tokens else "real")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_unknown_layout_exits_2_naming_the_key_and_the_expected_keys(tmp_path):
    sd = reference("s4d", False).state_dict()
    sd["s4_layers.1.kernel.extra_thing"] = torch.zeros(3)
    path = tmp_path / "odd.pt"
    torch.save(sd, path)
    r = run_cli("import", path, "--from", "state-spaces", "--out", tmp_path / "x")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "key 's4_layers.1.kernel.extra_thing' not understood" in r.stderr
    assert "expected encoder.weight, encoder.bias, s4_layers.<i>.D, s4_layers.<i>.kernel.log_dt" in r.stderr
    assert not (tmp_path / "x").exists()
    torch.save({"blocks.0.weight": torch.zeros(2)}, path)
    r = run_cli("import", path, "--from", "state-spaces", "--out", tmp_path / "x")
    assert r.returncode == 2 and "key 'blocks.0.weight' not understood" in r.stderr


def test_bad_shape_and_ambiguous_encoder_are_refused(tmp_path):
    sd = reference("s4-diag", False).state_dict()
    sd["s4_layers.2.layer.kernel.A_imag"] = torch.zeros(8, 3)
    with pytest.raises(CheckpointError, match=r"s4_layers.2.layer.kernel.A_imag has shape \(8, 3\), expected \(8, 4\)"):
        import_state_spaces(saved_dict(sd, tmp_path), tmp_path / "a")
    torch.manual_seed(0)
    ref = ExampleModel(8, 4, 8, 1, N=8, tokens=True, layer="s4d")  # Embedding(8, 8): could be Linear(8, 8)
    with pytest.raises(ConfigError, match="pass --input real or --input tokens"):
        import_state_spaces(saved(ref, tmp_path), tmp_path / "b")
    import_state_spaces(saved(ref, tmp_path), tmp_path / "c", input_kind="tokens")
    with pytest.raises(ConfigError, match="--input tokens: encoder.weight \\(8, 3\\) with a bias cannot be an Embedding"):
        import_state_spaces(saved(reference("s4d", False), tmp_path), tmp_path / "d", input_kind="tokens")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="not a weights-only torch file"):
        import_state_spaces(tmp_path / "junk.pt", tmp_path / "e")


def saved_dict(sd, tmp_path) -> Path:
    path = tmp_path / "sd.pt"
    torch.save(sd, path)
    return path


@pytest.mark.parametrize("bypass", ["identity", "zero"])
@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_pruned_model_round_trips_into_the_layout(tmp_path, kind, bypass):
    ref = reference(kind, prenorm=kind == "s4-diag")
    out = tmp_path / "imported"
    import_state_spaces(saved(ref, tmp_path), out, prenorm=kind == "s4-diag")
    dense, _ = load_checkpoint(out)
    pruned = compact(dense, [[0, 2, 5], [1, 2, 3, 4, 7], [6]], bypass=bypass).eval()
    folder = save_checkpoint(pruned, tmp_path / "pruned", extra=json.loads((out / "model.json").read_text())["extra"])
    record = export_state_spaces(folder, tmp_path / "pruned.pt")
    sd = torch.load(tmp_path / "pruned.pt", weights_only=True)
    back = reference(kind, prenorm=kind == "s4-diag", seed=9)
    back.load_state_dict(sd, strict=True)  # same layout, dense shapes
    x = torch.randn(2, 40, 3)
    assert (logits(back, x) - logits(pruned, x)).abs().max().item() < 1e-5
    assert (logits(back, x) - logits(dense, x)).abs().max().item() > 1e-4  # the pruning is in there
    assert record["kept"][2] == [6] and json.loads(Path(f"{tmp_path / 'pruned.pt'}.json").read_text())["bypass"] == bypass


def test_export_refuses_what_the_layout_cannot_express(tmp_path):
    spec = ModelSpec(kind="s4d", d_input=3, d_output=2, input_kind="real", d_model=8, n_layers=2, d_state=8,
                     pool="last")
    folder = save_checkpoint(S4Model(spec), tmp_path / "last")
    with pytest.raises(ConfigError, match="cannot express this model exactly: model.pool is 'last'"):
        export_state_spaces(folder, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def _parquet_task(tmp_path, classes=5, channels=3):
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir(parents=True)
    for name, n in (("train", 30), ("test", 10)):
        x = [rng.normal(size=(int(k), channels)).astype(np.float32).tolist() for k in rng.integers(20, 41, n)]
        pq.write_table(pa.table({"x": x, "y": (np.arange(n) % classes).tolist()}), data / f"{name}.parquet")
    config = tmp_path / "task.yaml"
    config.write_text(f"name: mine\ntask: {{name: parquet, data_dir: {data}, max_len: 40}}\n")
    return config


def test_import_with_task_config_scores_and_checks_the_fit(tmp_path):
    config = _parquet_task(tmp_path)
    r = import_state_spaces(saved(reference("s4d", False), tmp_path), tmp_path / "ok", task_config=str(config))
    assert set(r["norm_check"]) == {"post-norm", "pre-norm"} and 0.0 <= r["metrics"]["val_metric"] <= 1.0
    meta = json.loads((tmp_path / "ok" / "model.json").read_text())
    assert meta["task"] == "parquet" and meta["extra"]["length"] == 40 and meta["data_fingerprint"]
    with pytest.raises(ConfigError, match="does not fit task parquet: the data has 4 classes"):
        import_state_spaces(saved(reference("s4d", False), tmp_path), tmp_path / "bad", task_config=str(config),
                            overrides=["task.data_dir=" + str(_parquet_task(tmp_path / "other", classes=4).parent / "data")])


def test_cli_import_export_and_bench_an_imported_model(tmp_path):
    path = saved(reference("s4-dplr", False), tmp_path)
    out = tmp_path / "ck"
    r = run_cli("import", path, "--from", "state-spaces", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "imported s4block-dplr x 3 (H=8, N=8" in r.stdout
    r = run_cli("export", "--from-checkpoint", out, "--format", "safetensors", "--out", tmp_path / "m.safetensors",
                "--length", 32)
    assert r.returncode == 0, r.stderr
    assert json.loads(Path(f"{tmp_path / 'm.safetensors'}.json").read_text())["max_abs_diff"] <= 1e-4
    r = run_cli("export", "--from-checkpoint", out, "--format", "state-spaces", "--out", tmp_path / "back.pt")
    assert r.returncode == 0 and "wrote a s4block-dplr state dict" in r.stdout
    r = run_cli("bench", "latency", "--checkpoint", out, "--rates", "0,0.5", "--length", 32, "--repeats", 30,
                "--warmup", 1, "--kernel", "cached", "--bypass", "identity", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["rows"]
    assert {row["rate"] for row in rows} == {0.0, 0.5} and rows[0]["length"] == 32
    r = run_cli("export", "--from-checkpoint", out, "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert r.returncode == 2 and "no sequence length recorded" in r.stderr


def test_a_norm_placement_the_other_clearly_beats_is_refused(tmp_path, monkeypatch):
    import workers.interop.importer as importer

    config = _parquet_task(tmp_path)
    scores = iter([0.2, 0.9])  # as given (post-norm), then flipped (pre-norm)
    monkeypatch.setattr(importer, "_score", lambda sd, lay, splits: next(scores))
    with pytest.raises(ConfigError, match="as post-norm the model scores val accuracy 0.200, as pre-norm 0.900; .* "
                                          "pass --prenorm"):
        import_state_spaces(saved(reference("s4d", False), tmp_path), tmp_path / "m", task_config=str(config))
    assert not (tmp_path / "m").exists()
    scores = iter([0.5, 0.6])  # within noise of 6 val rows: accepted
    import_state_spaces(saved(reference("s4d", False), tmp_path), tmp_path / "m", task_config=str(config))
