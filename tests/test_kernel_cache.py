"""Eval-mode fft(K) cache: reused at a fixed L, never stale after updates, off in per-forward mode."""

import copy

import pytest
import torch

from support import tiny_model

from search_spaces.errors import ConfigError
from workers.models import S4Model
from workers.optim import build_optimizer
from workers.pruning import compact


def _model(**kw):
    return tiny_model(0, d_input=6, d_model=6, **kw)


def _count_kernel_calls(model):
    calls = []
    for block in model.blocks:
        block.conv.kernel.register_forward_hook(lambda *args: calls.append(1))
    return calls


def _fresh_copy(model):
    fresh = S4Model(model.spec, kept=[b.conv.kept.tolist() for b in model.blocks], bypass=model.bypass)
    fresh.load_state_dict(model.state_dict())
    return fresh.eval()


def test_eval_reuses_kernel_at_fixed_length_and_per_forward_recomputes():
    model = _model().eval()
    calls = _count_kernel_calls(model)
    x = torch.randint(1, 6, (2, 16))
    with torch.no_grad():
        y = model(x)
        model(x)
        assert len(calls) == 2  # one per layer, then cached
        model(torch.randint(1, 6, (2, 20)))
        assert len(calls) == 4  # a new length recomputes
        model.set_kernel_mode("per-forward")
        y2 = model(x)
        model(x)
        assert len(calls) == 8
    assert torch.equal(y, y2)
    with pytest.raises(ConfigError, match="kernel mode: got 'sometimes'"):
        model.set_kernel_mode("sometimes")


@pytest.mark.parametrize("bypass", ["identity", "zero"])
def test_fine_tuned_model_never_uses_stale_kernel(bypass):
    model = compact(_model(), [[0, 4], [1, 2, 3]], bypass)
    x = torch.randint(1, 6, (4, 16))
    y = torch.randint(0, 3, (4,))
    model.eval()
    with torch.no_grad():
        before = model(x)
    model.train()
    opt = build_optimizer(model, lr=0.05, weight_decay=0.0)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        after = model(x)
        expected = _fresh_copy(model)(x)
    assert not torch.allclose(after, before, atol=1e-4)
    assert torch.equal(after, expected)


def test_load_state_dict_and_in_place_updates_invalidate():
    model, other = _model().eval(), _model(dt_min=0.01, dt_max=0.02).eval()
    x = torch.randint(1, 6, (2, 16))
    with torch.no_grad():
        model(x)
        model.load_state_dict(other.state_dict())
        assert torch.equal(model(x), other(x))
        other.blocks[1].conv.kernel.log_dt.add_(0.5)  # an in-place update with no optimiser
        assert torch.equal(other(x), _fresh_copy(other)(x))
        double = copy.deepcopy(other).double()
        assert torch.allclose(double(x).float(), other(x), atol=1e-5)


def test_eval_with_gradients_does_not_reuse_a_graph():
    model = _model().eval()
    x = torch.randint(1, 6, (2, 16))
    for _ in range(2):  # a cached graph would fail on the second backward
        model(x).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
