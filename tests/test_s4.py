"""S4 (DPLR) kernel: the Cauchy/Woodbury kernel equals powering the materialised discrete system."""

from __future__ import annotations

import math

import pytest
import torch

from search_spaces.errors import ConfigError
from workers.models.s4 import S4Kernel
from workers.models.s4d import S4DKernel


def powered_kernel(kernel: S4Kernel, L: int) -> torch.Tensor:
    """K_l = C dA^l dB from dense matrices built here from the parameters (bilinear).  # (C H L)"""
    dt = torch.exp(kernel.log_dt.detach())  # (H)
    Lam = torch.complex(-torch.exp(kernel.log_A_real.detach()), kernel.A_imag.detach())  # (H N/2)
    P = torch.view_as_complex(kernel.P.detach())[0]  # (H N/2)
    B = torch.view_as_complex(kernel.B.detach())  # (H N/2)
    C = torch.view_as_complex(kernel.C.detach())  # (C H N/2)
    full = lambda x: torch.cat([x, x.conj()], -1)  # noqa: E731
    N = kernel.N
    I = torch.eye(N, dtype=torch.complex128)  # (N N)
    K = torch.zeros(C.shape[0], kernel.H, L, dtype=torch.float64)  # (C H L)
    for h in range(kernel.H):
        A = torch.diag(full(Lam[h])) - torch.outer(full(P[h]), full(P[h]).conj())  # (N N)
        M = torch.linalg.inv(I - dt[h] / 2 * A)  # (N N)
        dA, x = M @ (I + dt[h] / 2 * A), M @ (dt[h] * full(B[h]))  # (N N), (N)
        for ell in range(L):
            K[:, h, ell] = (full(C[:, h]) @ x).real  # (C)
            x = dA @ x  # (N)
    return K


def make(H=3, N=8, **kw) -> S4Kernel:
    torch.manual_seed(0)
    return S4Kernel(H, N, **kw).double()


@pytest.mark.parametrize("L", [16, 33, 64])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_cauchy_woodbury_kernel_equals_powered_dplr_system(L, bidirectional):
    kernel = make(bidirectional=bidirectional)
    with torch.no_grad():  # large steps, so dA^L is far from 0 and C~ matters
        kernel.log_dt.copy_(torch.log(torch.tensor([0.05, 0.3, 1.0], dtype=torch.float64)))
    K = kernel(L)  # (C H L)
    ref = powered_kernel(kernel, L)
    assert K.shape == (2 if bidirectional else 1, 3, L)
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(K, ref, rtol=0, atol=1e-10)


def test_trained_like_parameters_still_match():
    """Random (not HiPPO) Lambda, P, B keep the equivalence: nothing relies on the init."""
    kernel = make(N=6)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in (kernel.log_A_real, kernel.A_imag, kernel.P, kernel.B, kernel.C):
            p.add_(0.3 * torch.randn_like(p))
        kernel.log_dt.fill_(math.log(0.2))
    torch.testing.assert_close(kernel(40), powered_kernel(kernel, 40), rtol=0, atol=1e-10)


def test_kernel_for_another_length_is_a_prefix_not_a_stale_c_tilde():
    kernel = make()
    with torch.no_grad():
        kernel.log_dt.fill_(math.log(0.5))
    K64, K16 = kernel(64), kernel(16)
    torch.testing.assert_close(K16, K64[..., :16], rtol=0, atol=1e-10)


def test_p_zero_reduces_to_bilinear_s4d():
    torch.manual_seed(0)
    s4 = S4Kernel(4, 8, init="lin", trainable_B=False).double()
    s4d = S4DKernel(4, 8, init="lin", disc="bilinear").double()
    with torch.no_grad():
        for name in ("log_dt", "log_A_real", "A_imag", "C"):
            getattr(s4d, name).copy_(getattr(s4, name))
    assert torch.count_nonzero(s4.P) == 0
    torch.testing.assert_close(s4(32), s4d(32), rtol=0, atol=1e-10)


def test_gradients_are_finite_and_reach_every_parameter():
    kernel = make(bidirectional=True)
    K = kernel(32)
    (K ** 2).sum().backward()
    for name, p in kernel.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_float32_kernel_at_long_length_is_finite_and_close_to_float64():
    torch.manual_seed(0)
    kernel = S4Kernel(4, 16)
    K32 = kernel(1024)
    K64 = kernel.double()(1024).float()
    assert torch.isfinite(K32).all()
    assert (K32 - K64).abs().max() < 1e-3 * K64.abs().max()


def test_subset_equals_selected_rows():
    kernel = make(H=5, bidirectional=True)
    idx = [4, 1, 2]
    sub = kernel.subset(idx)
    assert sub.H == 3
    torch.testing.assert_close(sub(24), kernel(24)[:, idx], rtol=0, atol=1e-12)
    with torch.no_grad():  # copies: changing the subset leaves the parent alone
        sub.C.add_(1.0)
    torch.testing.assert_close(kernel.subset(idx)(24), kernel(24)[:, idx], rtol=0, atol=1e-12)


def test_parameter_count_matches_paper_listops_s4():
    """6 layers x (SSM 33,024 incl. D) + encoder/norm/mixing/decoder = 401,418 (paper Table II)."""
    kernel = S4Kernel(128, 64)
    ssm = sum(p.numel() for p in kernel.parameters()) + 128  # + D
    assert ssm == 33_024
    H, vocab, classes, layers = 128, 18, 10, 6
    rest = vocab * H + layers * (2 * H + H * 2 * H + 2 * H) + H * classes + classes  # emb, BN, mix, dec
    assert layers * ssm + rest == 401_418


def test_ssm_parameters_carry_their_optimiser_settings():
    kernel = S4Kernel(2, 4, lr=0.01)
    tagged = {n for n, p in kernel.named_parameters() if hasattr(p, "_optim")}
    assert tagged == {"log_dt", "log_A_real", "A_imag", "B", "P"}
    assert kernel.log_dt._optim == {"lr": 0.01, "weight_decay": 0.0}  # the value given, no hidden cap
    assert S4Kernel(2, 4, lr=1e-4).P._optim["lr"] == 1e-4
    assert S4Kernel(2, 4).P._optim == {"lr": None, "weight_decay": 0.0}  # the authors' default
    frozen_B = S4Kernel(2, 4, trainable_B=False)
    assert "B" in dict(frozen_B.named_buffers()) and "B" not in dict(frozen_B.named_parameters())


def test_legs_init_reproduces_hippo_legs_kernel():
    """With the HiPPO-LegS init the DPLR system is the LegS matrix in another basis: its kernel
    with C = V^* e (e = projection on the real basis) equals the real LegS system's kernel.
    The init clips Im(B) to [-2, 2] like the S4 authors; the equivalence holds for the unclipped B."""
    from workers.models.s4d import legs_B, legs_normal_eigen

    N, L, dt = 8, 20, 0.1
    torch.manual_seed(0)
    kernel = S4Kernel(1, N).double()
    Lam, V, q = legs_normal_eigen(N)  # (N/2), (N N/2), (N)
    c_real = torch.randn(N, dtype=torch.float64)  # (N) an output row in the LegS basis
    with torch.no_grad():
        kernel.log_dt.fill_(math.log(dt))
        kernel.C.copy_(torch.view_as_real((c_real.to(torch.complex128) @ V)[None, None]))  # C V
        kernel.B.copy_(torch.view_as_real(legs_B(N, clip=None)[None]))  # (1 N/2 2) V^* B unclipped
    n = torch.arange(N, dtype=torch.float64)
    A = -torch.tril(q[:, None] * q[None, :], -1) - torch.diag(n + 1)  # (N N) HiPPO-LegS
    I = torch.eye(N, dtype=torch.float64)
    M = torch.linalg.inv(I - dt / 2 * A)
    dA, x = M @ (I + dt / 2 * A), M @ (dt * q)
    ref = []
    for _ in range(L):
        ref.append(c_real @ x)
        x = dA @ x
    ref = torch.stack(ref)  # (L); the init is stored in float32, hence the tolerance
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(kernel(L)[0, 0], ref, rtol=0, atol=1e-6 * ref.abs().max().item())


@pytest.mark.parametrize("kw, word", [({"disc": "foh"}, "model.disc"), ({"init": "fourier"}, "model.init")])
def test_bad_options_raise_one_line_config_errors(kw, word):
    with pytest.raises(ConfigError, match=word):
        S4Kernel(2, 4, **kw)
