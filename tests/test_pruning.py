"""Operator pruning: masked reference == compacted model; kept sets compose; bad kept sets."""

import importlib.util

import numpy as np
import pytest
import torch

from search_spaces.errors import ConfigError
from workers.models import ModelSpec, S4Model
from workers.models.layer import SSMConv
from workers.pruning import bypass_layer, compact, count_parameters, kept_channels, masked, ssm_responses

HAS_S4 = importlib.util.find_spec("workers.models.s4") is not None
KINDS = ["s4d", pytest.param("s4", marks=pytest.mark.skipif(not HAS_S4, reason="workers/models/s4.py not written yet"))]
H = 8
KEPT_SETS = {
    "one-kept": [[3], [0], [7]],
    "all-kept": [list(range(H))] * 3,
    "mixed": [[0, 2, 5, 6], [7], list(range(H))],
}


def _spec(kind, **kw):
    base = dict(kind=kind, d_input=6, d_output=3, d_model=H, n_layers=3, d_state=8, dropout=0.0,
                init="legs" if kind == "s4" else "lin")
    base.update(kw)
    return ModelSpec(**base)


def _max_diff(a, b, x, lengths, mode):
    a.train(mode == "train")
    b.train(mode == "train")
    return (a(x, lengths) - b(x, lengths)).abs().max().item()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bypass", ["identity", "zero"])
@pytest.mark.parametrize("kept_name", list(KEPT_SETS))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_masked_and_compacted_agree(kind, bypass, kept_name, mode):
    torch.manual_seed(0)
    model = S4Model(_spec(kind))
    x = torch.randint(1, 6, (4, 32))
    lengths = torch.tensor([32, 20, 7, 1])
    kept = KEPT_SETS[kept_name]
    reference = masked(model, kept, bypass)
    compacted = compact(model, kept, bypass)
    assert _max_diff(reference, compacted, x, lengths, mode) <= 1e-5
    assert kept_channels(compacted) == [sorted(k) for k in kept]
    if kept_name != "all-kept":  # pruning changes the function
        assert _max_diff(model, compacted, x, lengths, "eval") > 1e-4


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bypass", ["identity", "zero"])
def test_masked_and_compacted_agree_bidirectional_layernorm(kind, bypass):
    torch.manual_seed(1)
    model = S4Model(_spec(kind, bidirectional=True, norm="layer", prenorm=True, trainable_B=True))
    x = torch.randint(1, 6, (3, 24))
    kept = [[1, 4], [0, 1, 2, 3, 4, 5, 6], [6]]
    for mode in ("train", "eval"):
        assert _max_diff(masked(model, kept, bypass), compact(model, kept, bypass), x, None, mode) <= 1e-5


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bypass", ["identity", "zero"])
def test_compacting_again_composes(kind, bypass):
    torch.manual_seed(2)
    model = S4Model(_spec(kind)).eval()
    x = torch.randint(1, 6, (3, 16))
    stage1 = [[0, 2, 5, 6], [1, 3, 7], [0, 1, 2, 3, 4, 5, 6, 7]]
    stage2 = [[2, 6], [7], [4]]
    once = compact(model, stage1, bypass)
    twice = compact(once, stage2)
    direct = compact(model, stage2, bypass)
    assert kept_channels(twice) == stage2  # original numbering, not positions in stage 1
    assert twice.bypass == bypass
    for a, b in [(twice, direct), (twice, masked(once, stage2)), (twice, masked(model, stage2, bypass))]:
        assert _max_diff(a.eval(), b.eval(), x, None, "eval") <= 1e-5
    assert count_parameters(twice) == count_parameters(direct)


def test_compaction_leaves_the_parent_untouched():
    torch.manual_seed(3)
    model = S4Model(_spec("s4d")).eval()
    x = torch.randint(1, 6, (2, 16))
    before = model(x).detach()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    child = compact(model, KEPT_SETS["mixed"], "zero").train()
    opt = torch.optim.SGD(child.parameters(), lr=0.1)
    child(x).sum().backward()
    opt.step()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(model.eval()(x), before)
    assert kept_channels(model) == [list(range(H))] * 3


def test_parameter_count_of_compacted_models():
    N = 8
    model = S4Model(_spec("s4d", d_state=N))
    dense = count_parameters(model)
    per_channel = 1 + N // 2 + N // 2 + N + 1  # log_dt, log_A_real, A_imag, C (complex), D
    kept = KEPT_SETS["mixed"]
    pruned = sum(H - len(k) for k in kept)
    assert count_parameters(compact(model, kept, "identity")) == dense - pruned * per_channel
    assert count_parameters(compact(model, kept, "zero")) == dense - pruned * (per_channel + 2 * H)


def test_pruned_channel_bypass_semantics():
    torch.manual_seed(4)
    spec = _spec("s4d")
    u = torch.randn(2, H, 10)  # (B H L)
    identity = SSMConv(spec, kept=[1, 6], bypass="identity")
    pruned = [h for h in range(H) if h not in (1, 6)]
    assert identity.output_channels() == [1, 6] + pruned  # kept-first layout
    for grad in (True, False):  # training path (cat) and in-place eval path
        with torch.set_grad_enabled(grad):
            y = identity(u)  # (B H L), kept-first
        assert torch.equal(y[:, 2:], u[:, pruned])  # input forwarded unchanged
        assert not torch.allclose(y[:, :2], u[:, [1, 6]])
        assert torch.allclose(y[:, :2], identity.ssm(u[:, [1, 6]]))
    zero = SSMConv(spec, kept=[1, 6], bypass="zero")
    assert zero(u).shape == (2, 2, 10)
    with torch.no_grad():  # in-place eval path == autograd path
        assert torch.allclose(zero(u), zero.ssm(u[:, [1, 6]]))
        assert torch.allclose(identity(u), torch.cat([identity.ssm(u[:, [1, 6]]), u[:, pruned]], 1))
    v = u.transpose(1, 2).contiguous().transpose(1, 2)  # the same values as an L-major view
    with torch.no_grad():
        assert torch.equal(identity(v), identity(u)) and torch.equal(zero(v), zero(u))


@pytest.mark.parametrize("bad,message", [
    ([[0, 8], [1], [2]], r"kept\[layer 0\]: index 8 out of range, expected 0..7"),
    ([[0], [1, 1], [2]], r"kept\[layer 1\]: duplicate index 1"),
    ([[0], [1], []], r"kept\[layer 2\]: got an empty set"),
    ([[0], [1]], r"kept: got 2 layer\(s\), expected a list of 3"),
    ([[0], [-1], [2]], r"kept\[layer 1\]: index -1 out of range"),
    ([[0], ["a"], [2]], r"kept\[layer 1\]: got 'a', expected an integer"),
])
def test_bad_kept_sets_raise_one_line_config_error(bad, message):
    model = S4Model(_spec("s4d"))
    for fn in (compact, masked):
        with pytest.raises(ConfigError, match=message) as info:
            fn(model, bad, "identity")
        assert "\n" not in str(info.value)


def test_kept_must_be_subset_of_current_kept():
    model = compact(S4Model(_spec("s4d")), [[0, 2], [1], [3]], "identity")
    with pytest.raises(ConfigError, match=r"kept\[layer 0\]: index 1 is already pruned"):
        compact(model, [[0, 1], [1], [3]])
    with pytest.raises(ConfigError, match="bypass: got 'zero'.*expected 'identity'"):
        compact(model, [[0], [1], [3]], "zero")
    with pytest.raises(ConfigError, match="kept"):
        S4Model(_spec("s4d"), kept=[[9], [0], [0]])


def test_ssm_responses_of_kept_channels():
    torch.manual_seed(5)
    model = S4Model(_spec("s4d", bidirectional=True))
    kept = KEPT_SETS["mixed"]
    full = ssm_responses(model, 20)
    for responses in (ssm_responses(compact(model, kept), 20), ssm_responses(masked(model, kept), 20)):
        assert [K.shape for K, _ in responses] == [(len(k), 20) for k in kept]
        for (K, D), (K_full, D_full), ks in zip(responses, full, kept):
            assert isinstance(K, np.ndarray) and isinstance(D, np.ndarray)
            assert np.allclose(K, K_full[ks], atol=1e-6) and np.allclose(D, D_full[ks])
    conv = model.blocks[0].conv
    assert np.allclose(full[0][0], conv.kernel(20).sum(0).detach().numpy(), atol=1e-6)  # both directions summed


@pytest.mark.parametrize("bypass", ["identity", "zero"])
def test_bypass_layer_switches_off_one_layer_in_place(bypass):
    torch.manual_seed(0)
    model = compact(S4Model(_spec("s4d"), bypass=bypass).eval(), KEPT_SETS["mixed"])
    u = torch.randn(2, H, 5)  # (B H L)
    before = [block.conv(u) for block in model.blocks]
    bypass_layer(model, 0)
    assert kept_channels(model)[0] == [] and kept_channels(model)[1:] == KEPT_SETS["mixed"][1:]
    with torch.no_grad():
        out = model.blocks[0].conv(u)
        if bypass == "identity":
            assert torch.equal(out, u[:, model.blocks[0].conv.order])  # every channel passes through
        else:
            assert torch.count_nonzero(out) == 0
        assert torch.allclose(model.blocks[1].conv(u), before[1])
    with pytest.raises(ConfigError, match="layer_index: got 3, expected 0..2"):
        bypass_layer(model, 3)
