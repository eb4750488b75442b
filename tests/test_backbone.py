"""S4Model: sizes, pooling over real tokens, input checks, step mode = convolution mode."""

import pytest
import torch

from search_spaces.errors import ConfigError
from workers.models import ModelSpec, S4Model
from workers.pruning import compact, count_parameters


def test_listops_s4d_has_paper_parameter_count():
    spec = ModelSpec(kind="s4d", d_input=18, d_output=10, d_model=128, n_layers=8, d_state=64, norm="batch")
    assert count_parameters(S4Model(spec)) == 402_954


def test_spec_round_trip_and_bad_keys():
    spec = ModelSpec(kind="s4d", d_input=3, d_output=4, input_kind="real", bidirectional=True, pool="last")
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError, match="unknown key.*d_modle"):
        ModelSpec.from_dict({**spec.to_dict(), "d_modle": 3})
    with pytest.raises(ConfigError, match="model.norm: got 'group'"):
        ModelSpec(norm="group")
    with pytest.raises(ConfigError, match="model.d_state: got 7"):
        ModelSpec(d_state=7)
    with pytest.raises(ConfigError, match="dt_min"):
        ModelSpec(dt_min=0.5, dt_max=0.1)


@pytest.mark.parametrize("pool", ["mean", "last"])
@pytest.mark.parametrize("norm,prenorm", [("batch", False), ("layer", True)])
def test_padding_beyond_length_does_not_change_logits(pool, norm, prenorm):
    torch.manual_seed(0)
    spec = ModelSpec(d_input=7, d_output=3, d_model=8, n_layers=2, d_state=8, norm=norm, prenorm=prenorm, pool=pool)
    model = S4Model(spec).eval()
    x = torch.randint(1, 7, (3, 16))
    lengths = torch.tensor([16, 9, 1])
    y = model(x, lengths)
    x2 = x.clone()
    x2[1, 9:] = 0  # padding
    x2[2, 1:] = torch.randint(1, 7, (15,))
    assert torch.allclose(model(x2, lengths), y, atol=1e-6)
    assert not torch.allclose(model(x2), model(x2, lengths))  # lengths really matter


def test_mean_and_last_pool_definitions():
    torch.manual_seed(0)
    spec = ModelSpec(d_input=2, d_output=3, input_kind="real", d_model=4, n_layers=1, d_state=4)
    model = S4Model(spec).eval()
    x = torch.randn(2, 10, 2)
    lengths = torch.tensor([10, 4])
    h = model.features(x)  # (B H L)
    mean = model(x, lengths)
    assert torch.allclose(mean[1], model.decoder(h[1, :, :4].mean(-1)), atol=1e-6)
    model.spec.pool = "last"
    assert torch.allclose(model(x, lengths)[1], model.decoder(h[1, :, 3]), atol=1e-6)


def test_bad_input_shapes_raise_config_error():
    tokens = S4Model(ModelSpec(d_input=5, d_output=2, d_model=4, n_layers=1, d_state=4))
    real = S4Model(ModelSpec(d_input=3, d_output=2, input_kind="real", d_model=4, n_layers=1, d_state=4))
    with pytest.raises(ConfigError, match=r"expected \(B L\) integer tokens"):
        tokens(torch.randn(2, 8, 5))
    with pytest.raises(ConfigError, match=r"got shape \(2, 8, 2\).*expected \(B L 3\)"):
        real(torch.randn(2, 8, 2))
    with pytest.raises(ConfigError, match="lengths"):
        tokens(torch.ones(2, 8, dtype=torch.long), torch.tensor([8]))


def test_small_model_learns_to_fit_a_batch():
    torch.manual_seed(0)
    spec = ModelSpec(d_input=6, d_output=2, d_model=16, n_layers=2, d_state=8, norm="layer", prenorm=True)
    model = S4Model(spec)
    x = torch.randint(1, 6, (16, 12))
    y = (x[:, 0] > 3).long()  # needs information from the start of the sequence
    opt = torch.optim.AdamW(model.parameters(), lr=0.02)
    losses = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention
    try:
        for _ in range(30):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    assert losses[-1] < 0.3 * losses[0]


def _trained_stats(model, x):
    model.train()
    with torch.no_grad():
        model(x)  # give BatchNorm non-trivial running statistics
    return model.eval()


@pytest.mark.parametrize("pool", ["mean", "last"])
@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
@pytest.mark.parametrize("input_kind", ["tokens", "real"])
def test_step_mode_equals_convolution_mode(pool, disc, input_kind):
    torch.manual_seed(0)
    d_input = 5 if input_kind == "tokens" else 3
    spec = ModelSpec(d_input=d_input, d_output=4, input_kind=input_kind, d_model=6, n_layers=2, d_state=8,
                     pool=pool, disc=disc, trainable_B=True)
    model = S4Model(spec).double()
    L = 24
    x = torch.randint(1, 5, (3, L)) if input_kind == "tokens" else torch.randn(3, L, 3, dtype=torch.double)
    model = _trained_stats(model, x)
    with torch.no_grad():
        state = model.default_state(3)
        for t in range(L):
            logits, state = model.step(x[:, t], state)
            if t == L // 2:  # each step reports the prefix seen so far
                prefix = model(x[:, : t + 1])
                assert torch.allclose(logits, prefix, atol=1e-9)
        assert torch.allclose(logits, model(x, torch.full((3,), L)), atol=1e-9)


@pytest.mark.parametrize("bypass", ["identity", "zero"])
@pytest.mark.parametrize("norm,prenorm", [("batch", False), ("layer", True)])
def test_step_mode_of_compacted_model(bypass, norm, prenorm):
    torch.manual_seed(1)
    spec = ModelSpec(d_input=5, d_output=3, d_model=8, n_layers=3, d_state=8, norm=norm, prenorm=prenorm)
    x = torch.randint(1, 5, (2, 20))
    model = _trained_stats(S4Model(spec).double(), x)
    model = compact(model, [[0, 5], [7], list(range(8))], bypass).eval()
    with torch.no_grad():
        state = model.default_state(2)
        for t in range(20):
            logits, state = model.step(x[:, t], state)
        assert torch.allclose(logits, model(x), atol=1e-9)


def test_step_mode_rejects_bidirectional():
    model = S4Model(ModelSpec(d_input=5, d_output=3, d_model=4, n_layers=1, d_state=4, bidirectional=True))
    with pytest.raises(ConfigError, match="bidirectional"):
        model.default_state(1)
