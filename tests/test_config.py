"""The search config: presets, validation messages, overrides, dumps, diffs and a loader fuzz."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search_spaces.config import (
    PAPER_SEEDS,
    SearchConfig,
    config_diff,
    config_from_yaml,
    dump_config,
    load_search_config,
    preset_names,
)
from search_spaces.errors import ConfigError

TASKS = ("listops", "pathfinder", "imdb", "ecg")
MODELS = ("s4", "s4d")
MINIMAL = "name: t\ntask: {name: listops, data_dir: data/x}\n"


def _error(text: str, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_yaml(text, overrides=overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_all_sixteen_presets_exist_and_load():
    names = preset_names()
    expected = {f"{kind}-{t}-{m}" for kind in ("paper", "cpu") for t in TASKS for m in MODELS}
    assert expected <= set(names)
    for name in expected:
        cfg = load_search_config(name)
        assert cfg.name == name
        task, model = name.split("-")[1:]
        assert cfg.task.name == task and cfg.model.kind == model


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("model", MODELS)
def test_paper_presets_follow_the_protocol(task, model):
    cfg = load_search_config(f"paper-{task}-{model}")
    assert cfg.search.rates == [0.1, 0.3, 0.5, 0.7, 0.9]
    assert cfg.seed_list == [7, 42, 123, 2024, 31650]
    assert cfg.search.mode == "incremental"
    assert cfg.search.allocation.policy == "depth-aware" and cfg.search.allocation.base == 2.0
    assert cfg.search.selection.policy == "random" and cfg.search.bypass == "identity"
    assert cfg.model.d_state == 64 and cfg.task.val_fraction == 0.2
    assert cfg.task.max_len == {"listops": 2048, "pathfinder": 1024, "imdb": 4096, "ecg": 4096}[task]
    assert cfg.task.data_dir == Path.cwd() / "data" / task
    ft = cfg.search.finetune
    table = {("s4", "listops"): (6, 1e-4, 2), ("s4", "pathfinder"): (20, 1e-4, 6),
             ("s4", "imdb"): (3, 1e-5, 1), ("s4", "ecg"): (20, 1e-4, 6),
             ("s4d", "listops"): (5, 1e-4, 2), ("s4d", "pathfinder"): (20, 1e-4, 6),
             ("s4d", "imdb"): (4, 1e-5, 1), ("s4d", "ecg"): (20, 1e-4, 6)}
    assert (ft.epochs, ft.lr, ft.patience) == table[(model, task)] and ft.weight_decay == 1e-5


def test_paper_baseline_sizes_match_table():
    s4d_listops = load_search_config("paper-listops-s4d")
    assert (s4d_listops.model.n_layers, s4d_listops.model.d_model, s4d_listops.model.norm) == (8, 128, "batch")
    assert (s4d_listops.baseline.train.epochs, s4d_listops.baseline.train.weight_decay) == (40, 0.05)
    s4_imdb = load_search_config("paper-imdb-s4")
    assert (s4_imdb.model.n_layers, s4_imdb.model.d_model, s4_imdb.model.prenorm) == (4, 64, True)
    ecg = load_search_config("paper-ecg-s4d")
    assert (ecg.model.norm, ecg.model.dropout, ecg.baseline.train.batch_size) == ("layer", 0.2, 32)


def test_cpu_presets_are_small_and_generate_their_data():
    for t in TASKS:
        for m in MODELS:
            cfg = load_search_config(f"cpu-{t}-{m}")
            assert cfg.model.d_model <= 128 and cfg.model.n_layers <= 4
            assert cfg.task.max_len is None or cfg.task.max_len <= 512
            assert cfg.task.generate is not None and cfg.task.generate.train <= 5000
            assert cfg.latency.device == "cpu" and cfg.resources.gpu == 0


def test_relative_paths_resolve_against_cwd_at_load_time(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config_from_yaml(MINIMAL + "baseline: {checkpoint: runs/base}\n")
    assert cfg.task.data_dir == tmp_path / "data" / "x"
    assert cfg.baseline.checkpoint == tmp_path / "runs" / "base"
    assert cfg.task.data_dir.is_absolute()


def test_defaults_fill_missing_sections():
    cfg = config_from_yaml(MINIMAL)
    assert cfg.search.rates == [0.1, 0.3, 0.5, 0.7, 0.9]
    assert cfg.seed_list == list(PAPER_SEEDS)
    assert cfg.latency.repeats == 30 and cfg.resources.cpu == 1
    assert cfg.model.trainable_B is False


def test_yaml_path_and_dump_round_trip(tmp_path):
    cfg = load_search_config("cpu-listops-s4d", ["search.rates=[0.2, 0.6]"])
    path = tmp_path / "stored.yaml"
    path.write_text(dump_config(cfg))
    again = load_search_config(str(path))
    assert again == cfg
    assert config_diff(cfg, again) == []


def test_overrides_are_parsed_as_yaml_and_validated():
    cfg = load_search_config("cpu-listops-s4d", ["search.rates=[0.1,0.5]", "search.seeds=3",
                                                 "search.finetune.lr=3e-4", "name=other"])
    assert cfg.search.rates == [0.1, 0.5]
    assert cfg.seed_list == [7, 42, 123]
    assert cfg.search.finetune.lr == pytest.approx(3e-4)
    assert cfg.name == "other"
    with pytest.raises(ConfigError, match=r"search.bypass='skip' must be one of identity, zero"):
        load_search_config("cpu-listops-s4d", ["search.bypass=skip"])
    with pytest.raises(ConfigError, match=r"key.path=value"):
        load_search_config("cpu-listops-s4d", ["search.bypass"])
    with pytest.raises(ConfigError, match=r"search.rates is a list"):
        load_search_config("cpu-listops-s4d", ["search.rates.x=1"])
    with pytest.raises(ConfigError, match=r"unknown key 'search.ratez' \(did you mean 'rates'\?\)"):
        load_search_config("cpu-listops-s4d", ["search.ratez=[0.1]"])


def test_seed_count_expands_to_paper_seeds_then_distinct_extras():
    cfg = config_from_yaml(MINIMAL + "search: {seeds: 8}\n")
    seeds = cfg.seed_list
    assert seeds[:5] == list(PAPER_SEEDS) and len(seeds) == 8 and len(set(seeds)) == 8
    assert config_from_yaml(MINIMAL + "search: {seeds: 8}\n").seed_list == seeds
    assert config_from_yaml(MINIMAL + "search: {seeds: [3, 1]}\n").seed_list == [3, 1]


@pytest.mark.parametrize("extra, message", [
    ("search: {rates: [0.1, 0.5, 0.4]}", "search.rates[2]=0.4 must be greater than search.rates[1]=0.5"),
    ("search: {rates: [0.1, 1.0]}", "search.rates[1]=1.0 must be in (0, 1)"),
    ("search: {rates: []}", "search.rates=[] must list at least one rate"),
    ("search: {bypass: skip}", "search.bypass='skip' must be one of identity, zero"),
    ("search: {ratez: [0.1]}", "unknown key 'search.ratez' (did you mean 'rates'?)"),
    ("search: {seeds: [7, 7]}", "search.seeds[1]=7 repeats search.seeds[0]"),
    ("search: {seeds: 0}", "search.seeds=0 must be a seed count"),
    ("search: {allocation: {base: 1.0}}", "search.allocation.base=1.0 must be greater than 1"),
    ("search: {allocation: {policy: layer-wise}}", "search.allocation.layer=None must name the layer"),
    ("search: {allocation: {policy: layer-wise, layer: 9}}", "search.allocation.layer=9 must be less than model.n_layers=4"),
    ("search: {selection: {candidates: 0.5}}", "search.selection.candidates=0.5 must be greater than or equal to 1"),
    ("search: {finetune: {lr: -1}}", "search.finetune.lr=-1 must be greater than 0"),
    ("latency: {repeats: 10}", "latency.repeats=10 must be greater than or equal to 30"),
    ("latency: {device: tpu}", "latency.device='tpu' must be one of cpu, cuda"),
    ("resources: {cpu: 0}", "resources.cpu=0 must be greater than 0"),
    ("resources: {gpu: .nan}", "resources.gpu=nan must be a finite number"),
    ("model: {d_state: 3}", "model.d_state=3 must be even"),
    ("model: {n_layers: true}", "model.n_layers=True must be a number"),
    ("model: {kind: s5}", "model.kind='s5' must be one of s4d, s4"),
    ("model: {dt_min: 0.5, dt_max: 0.1}", "model.dt_min=0.5 must not exceed model.dt_max=0.1"),
    ("colour: red", "unknown key 'colour'"),
])
def test_errors_name_key_value_and_expectation(extra, message):
    assert message in _error(MINIMAL + extra + "\n")


def test_task_errors():
    assert "task.name='mnist' must be one of listops, pathfinder, imdb, ecg" in _error(
        "name: t\ntask: {name: mnist, data_dir: x}\n")
    assert "missing key 'task.data_dir'" in _error("name: t\ntask: {name: listops}\n")
    assert "missing key 'task'" in _error("name: t\n")
    assert "unknown key 'task.generate.options.max_lenn' for task listops (did you mean 'max_len'?)" in _error(
        "name: t\ntask: {name: listops, data_dir: x, generate: {options: {max_lenn: 3}}}\n")
    assert "name='a b' must be a simple name" in _error("name: a b\ntask: {name: listops, data_dir: x}\n")


def test_file_and_preset_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown preset 'cpu-listop-s4d' \(did you mean 'cpu-listops-s4d'\?\).*known presets: .*paper-listops-s4d"):
        load_search_config("cpu-listop-s4d")
    with pytest.raises(ConfigError, match=r"does not exist"):
        load_search_config(str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match=r"is a folder"):
        load_search_config(str(tmp_path) + "/")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line"):
        load_search_config(str(bad))
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"expected a mapping of sections, got a list"):
        load_search_config(str(bad))
    bad.write_text("")
    with pytest.raises(ConfigError, match=r"empty config"):
        load_search_config(str(bad))
    bad.write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(ConfigError, match=r"not UTF-8"):
        load_search_config(str(bad))


def test_config_diff_names_changed_keys():
    a = load_search_config("cpu-listops-s4d")
    b = load_search_config("cpu-listops-s4d", ["search.rates=[0.1,0.5]", "search.finetune.epochs=9"])
    assert config_diff(a, b) == [f"search.rates: {a.search.rates} -> [0.1, 0.5]",
                                 f"search.finetune.epochs: {a.search.finetune.epochs} -> 9"]
    assert config_diff(a, a) == []


def test_model_section_builds_a_model_spec():
    from workers.models.spec import ModelSpec

    cfg = load_search_config("paper-ecg-s4d")
    spec = ModelSpec.from_dict(cfg.model.to_spec_dict(12, 6, "real"))
    assert (spec.d_input, spec.d_output, spec.input_kind) == (12, 6, "real")
    assert (spec.d_model, spec.n_layers, spec.norm, spec.dropout) == (128, 4, "layer", 0.2)
    assert spec.trainable_B is False


def test_from_dict_rejects_non_mappings():
    with pytest.raises(ConfigError, match="expected a mapping"):
        SearchConfig.from_dict([1, 2])


# --- fuzz: the loader either loads or raises ConfigError -------------------------------------

_KEYS = ["name", "task", "model", "baseline", "search", "latency", "resources", "rates", "seeds",
         "data_dir", "generate", "options", "allocation", "policy", "base", "layer", "selection",
         "finetune", "lr", "epochs", "checkpoint", "train", "d_state", "batch_sizes", "gpu", "x"]
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                     st.sampled_from(["listops", "s4d", "depth-aware", "identity", "data/x", "1e-4", ""]))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(_KEYS), st.integers(0, 3)), inner, max_size=4)), max_leaves=20)
_PRESET_TEXT = (Path(__file__).parent.parent / "search_spaces" / "presets" / "cpu-listops-s4d.yaml").read_text()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=st.dictionaries(st.sampled_from(_KEYS), _values, max_size=6))
def test_fuzz_structured_yaml_loads_or_raises_config_error(doc):
    text = yaml.safe_dump(doc)
    try:
        cfg = config_from_yaml(text)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc)
    else:
        assert isinstance(cfg, SearchConfig)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pos=st.integers(0, len(_PRESET_TEXT)), cut=st.integers(0, 12),
       insert=st.text(alphabet=st.sampled_from(list(":-[]{},'\"&*!|>%@ \n\t#0.a1e")), max_size=6),
       override=st.text(max_size=20))
def test_fuzz_mutated_text_and_overrides_load_or_raise_config_error(pos, cut, insert, override):
    text = _PRESET_TEXT[:pos] + insert + _PRESET_TEXT[pos + cut:]
    for overrides in ((), (override,)):
        try:
            config_from_yaml(text, overrides=overrides)
        except ConfigError as exc:
            assert "\n" not in str(exc)


@pytest.mark.parametrize("text, message", [
    ("!!python/object:os.system {}", "not valid YAML at line 1, column 1: could not determine a constructor"),
    ("a: &x [*x]", "missing key 'name'"),
    ("name: !!binary aGVsbG8=\ntask: {name: listops, data_dir: x}", "name=b'hello' must be a valid string"),
    ("name: t\ntask: {name: listops, data_dir: 2020-01-01}", "task.data_dir=datetime.date(2020, 1, 1) must be a path"),
])
def test_yaml_tags_and_aliases_are_config_errors(text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_yaml(text)


@pytest.mark.parametrize("task", [t if t != "ecg" else pytest.param(t, marks=pytest.mark.slow) for t in TASKS])
def test_cpu_preset_generate_options_are_accepted_by_the_generators(task, tmp_path):
    from workers.data import generate_task, load_task

    cfg = load_search_config(f"cpu-{task}-s4d")
    g = cfg.task.generate
    out = generate_task(task, tmp_path / task, size={"train": 40, "val": 10, "test": 10}, seed=g.seed,
                        options=g.options)
    splits = load_task(task, out, max_len=cfg.task.max_len, val_fraction=cfg.task.val_fraction)
    assert splits.train.x.shape[1] <= (cfg.task.max_len or 512)
    assert len(splits.train.y) + len(splits.val.y) >= 40
    # a CPU preset's explicit max_len fits its own generated data: nothing is truncated
    assert all(not (getattr(splits, k).original_lengths() > splits.train.x.shape[1]).any()
               for k in ("train", "val", "test"))


def test_one_bad_seed_is_one_problem_and_preset_file_names_resolve():
    message = _error(MINIMAL + "search: {seeds: [1, 2, x]}\n")
    assert message.startswith("search.seeds[2]='x' must be a valid integer") and "more problem" not in message
    assert "(and 1 more problem)" in _error(MINIMAL + "search: {seeds: [1, 2, x], bypass: q}\n")
    assert load_search_config("cpu-listops-s4d.yaml") == load_search_config("cpu-listops-s4d")


@pytest.mark.parametrize("preset, d_input, d_output, params", [
    ("paper-listops-s4d", 18, 10, 402_954),
    ("paper-listops-s4", 18, 10, 401_418),
])
def test_paper_presets_build_the_papers_parameter_count(preset, d_input, d_output, params):
    from workers.models.backbone import S4Model
    from workers.models.spec import ModelSpec
    from workers.pruning import count_parameters

    cfg = load_search_config(preset)
    model = S4Model(ModelSpec.from_dict(cfg.model.to_spec_dict(d_input, d_output, "tokens")))
    assert count_parameters(model) == params


def test_ssm_lr_is_the_authors_default_unless_given():
    cfg = config_from_yaml(MINIMAL)
    assert cfg.model.ssm_lr is None  # the S4 authors' default, min(0.001, the run's lr)
    spec = config_from_yaml(MINIMAL, overrides=["model.ssm_lr=0.01"]).model.to_spec_dict(3, 2, "tokens")
    assert spec["ssm_lr"] == 0.01  # used as given: no cap
    assert _error(MINIMAL, ["model.ssm_lr=0"]) == "model.ssm_lr=0 must be greater than 0"
