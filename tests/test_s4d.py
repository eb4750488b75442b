"""S4D kernel maths: kernel = unrolled discrete recurrence, discretisation, inits, gradients."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from workers.models.layer import SSMConv, fft_kernel
from workers.models.s4d import S4DKernel
from workers.models.spec import ModelSpec
from workers.optim import build_optimizer


def _continuous(kernel):
    dt = torch.exp(kernel.log_dt).detach().double()  # (H)
    A = torch.complex(-torch.exp(kernel.log_A_real.double()), kernel.A_imag.double()).detach()  # (H N/2)
    B = torch.view_as_complex(kernel.B.double()).detach() if kernel.B is not None else torch.ones_like(A)
    C = torch.view_as_complex(kernel.C.double()).detach()  # (C H N/2)
    return dt, A, B, C


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
@pytest.mark.parametrize("trainable_B", [False, True])
@pytest.mark.parametrize("init", ["lin", "inv", "legs"])
def test_kernel_equals_unrolled_recurrence(disc, trainable_B, init):
    torch.manual_seed(0)
    kernel = S4DKernel(3, 8, init=init, disc=disc, trainable_B=trainable_B, dt_min=0.01, dt_max=0.5).double()
    L = 40
    K = kernel(L).detach()  # (1 H L)
    dt, A, B, C = _continuous(kernel)
    if disc == "zoh":
        dA, dB = torch.exp(dt[:, None] * A), (torch.exp(dt[:, None] * A) - 1) / A * B
    else:
        dA = (1 + dt[:, None] * A / 2) / (1 - dt[:, None] * A / 2)
        dB = dt[:, None] * B / (1 - dt[:, None] * A / 2)
    x = torch.zeros_like(A)  # (H N/2) state; impulse input u_0 = 1
    expected = []
    for step in range(L):
        x = dA * x + dB * (1.0 if step == 0 else 0.0)
        expected.append(2 * (C[0] * x).sum(-1).real)  # (H)
    expected = torch.stack(expected, -1)  # (H L)
    assert torch.allclose(K[0], expected, atol=1e-10, rtol=1e-8)
    assert K.abs().max() > 1e-3  # not a trivially zero kernel


def test_zoh_discretisation_matches_matrix_exponential():
    """Van Loan: expm([[A, B], [0, 0]] dt) = [[dA, dB], [0, 1]] for each complex mode."""
    torch.manual_seed(1)
    kernel = S4DKernel(2, 6, init="inv", disc="zoh", trainable_B=True).double()
    dA, dB, dC = (t.detach().numpy() for t in kernel.discrete())
    dt, A, B, C = (t.numpy() for t in _continuous(kernel))
    for h in range(2):
        for n in range(3):
            M = np.array([[A[h, n], B[h, n]], [0, 0]], dtype=complex) * dt[h]
            E = scipy.linalg.expm(M)
            assert abs(E[0, 0] - dA[h, n]) < 1e-12
            assert abs(E[0, 1] - dB[h, n]) < 1e-12
    assert np.allclose(dC, 2 * C[0])


def test_s4d_lin_and_inv_init_values():
    N = 16
    n = np.arange(N // 2)
    lin = S4DKernel(4, N, init="lin")
    inv = S4DKernel(4, N, init="inv")
    for kernel in (lin, inv):
        assert torch.allclose(-torch.exp(kernel.log_A_real), torch.full((4, N // 2), -0.5))
    assert np.allclose(lin.A_imag.detach().numpy(), np.pi * n, atol=1e-5)
    assert np.allclose(inv.A_imag.detach().numpy(), (N / np.pi) * (N / (2 * n + 1) - 1), rtol=1e-5)


def test_s4d_legs_init_is_spectrum_of_legs_normal_part():
    N = 16
    k = np.arange(N)
    A = np.where(k[:, None] > k[None, :], -np.sqrt(2 * k[:, None] + 1) * np.sqrt(2 * k[None, :] + 1), 0.0)
    A -= np.diag(k + 1)  # HiPPO-LegS
    P = np.sqrt(k + 0.5)
    eig = np.linalg.eigvals(A + np.outer(P, P))
    assert np.allclose(eig.real, -0.5)
    kernel = S4DKernel(2, N, init="legs")
    got = np.sort(kernel.A_imag.detach().numpy()[0])
    assert np.allclose(-np.exp(kernel.log_A_real.detach().numpy()), -0.5)
    assert np.allclose(got, np.sort(eig.imag[eig.imag > 0]), atol=1e-4)
    assert np.allclose(kernel.A_imag.detach().numpy()[1], kernel.A_imag.detach().numpy()[0])


def test_dt_log_uniform_in_range_and_ssm_params_carry_optim():
    torch.manual_seed(0)
    kernel = S4DKernel(2000, 4, dt_min=0.001, dt_max=0.1, lr=0.01, trainable_B=True)
    dt = torch.exp(kernel.log_dt)
    assert dt.min() >= 0.001 * (1 - 1e-6) and dt.max() <= 0.1 * (1 + 1e-6)
    assert abs(torch.log(dt).mean().item() - math.log(0.01)) < 0.1  # log-uniform: centred at the geometric mean
    for p in (kernel.log_dt, kernel.log_A_real, kernel.A_imag, kernel.B):
        assert p._optim == {"lr": 0.01, "weight_decay": 0.0}  # the value given, no hidden cap
    assert not hasattr(kernel.C, "_optim")
    assert S4DKernel(2, 4, lr=0.0005).log_dt._optim["lr"] == 0.0005
    assert S4DKernel(2, 4).log_dt._optim == {"lr": None, "weight_decay": 0.0}  # the authors' default


def _ssm_group_lrs(model, lr):
    """{lr of the group holding the SSM parameters, lr of the other group} for a run at `lr`."""
    ssm = {id(p) for b in model.blocks for p in (b.conv.kernel.log_dt, b.conv.kernel.log_A_real, b.conv.kernel.A_imag)}
    opt = build_optimizer(model, lr=lr, weight_decay=0.05)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    out = {}
    for group in opt.param_groups:
        ids = {id(p) for p in group["params"]}
        if ids & ssm:
            assert ids == ssm and group["weight_decay"] == 0.0
            out["ssm"] = group["lr"]
        else:
            assert group["weight_decay"] == 0.05
            out["rest"] = group["lr"]
    return out


@pytest.mark.parametrize("ssm_lr, run_lr, expected", [
    (0.01, 0.004, 0.01),  # model.ssm_lr is honoured as given, above 0.001 and above the run's lr
    (0.01, 1e-4, 0.01),
    (2e-4, 0.004, 2e-4),
    (None, 0.004, 0.001),  # null: the S4 authors' default min(0.001, lr)
    (None, 1e-4, 1e-4),  # ... so fine-tuning at a small lr never trains the SSM faster than the rest
])
def test_optimizer_groups_follow_optim_tags(ssm_lr, run_lr, expected):
    from workers.models.backbone import S4Model

    spec = ModelSpec(d_input=5, d_output=2, d_model=4, n_layers=2, d_state=4, ssm_lr=ssm_lr)
    assert _ssm_group_lrs(S4Model(spec), run_lr) == {"ssm": expected, "rest": run_lr}


@pytest.mark.parametrize("bidirectional", [False, True])
def test_fft_convolution_equals_direct_sum(bidirectional):
    torch.manual_seed(0)
    spec = ModelSpec(d_model=3, d_state=4, bidirectional=bidirectional)
    conv = SSMConv(spec).double()
    L = 12
    u = torch.randn(2, 3, L, dtype=torch.double)  # (B H L)
    y = conv(u).detach()  # (B H L)
    K = conv.kernel(L).detach()  # (C H L)
    D = conv.D.detach()
    expected = torch.zeros_like(u)
    for t in range(L):
        for s in range(L):
            if s <= t:
                expected[..., t] += K[0, :, t - s] * u[..., s]
            elif bidirectional:
                expected[..., t] += K[1, :, s - t - 1] * u[..., s]
    expected += D[:, None] * u
    assert torch.allclose(y, expected, atol=1e-10)
    assert fft_kernel(K, L).shape == (3, L + 1)


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_gradients_are_finite(disc):
    torch.manual_seed(0)
    kernel = S4DKernel(4, 8, disc=disc, trainable_B=True, bidirectional=True)
    K = kernel(64)
    (K ** 2).sum().backward()
    for name, p in kernel.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_subset_copies_channels():
    torch.manual_seed(0)
    kernel = S4DKernel(5, 6, trainable_B=True, bidirectional=True)
    sub = kernel.subset([3, 0])
    assert sub.H == 2
    assert torch.allclose(sub(20), kernel(20)[:, [3, 0]])
    with torch.no_grad():
        sub.log_dt.add_(1.0)
    assert not torch.allclose(sub(20), kernel(20)[:, [3, 0]])  # a copy, not a view
    assert sub.log_dt._optim == kernel.log_dt._optim


def test_copies_of_a_model_keep_ssm_optimiser_settings():
    import copy
    import pickle

    from workers.models.backbone import S4Model

    model = S4Model(ModelSpec(d_input=5, d_output=2, d_model=4, n_layers=1, d_state=4, trainable_B=True,
                              ssm_lr=0.002))
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        kernel = clone.blocks[0].conv.kernel
        for p in (kernel.log_dt, kernel.log_A_real, kernel.A_imag, kernel.B):
            assert p._optim == {"lr": 0.002, "weight_decay": 0.0}
        groups = build_optimizer(clone, 0.01, 0.1).param_groups
        assert sorted(len(g["params"]) for g in groups) == [4, len(list(clone.parameters())) - 4]
