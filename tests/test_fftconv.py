"""The training-path SSM maths: the FFT convolution's hand-written backward and the blocked Vandermonde."""

import pytest
import torch

from workers.models.fftconv import causal_fft_conv, fft_length
from workers.models.s4d import S4DKernel


def _autograd_conv(u, k):
    L = u.shape[-1]
    return torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(k, n=2 * L), n=2 * L)[..., :L]  # (B H L)


@pytest.mark.parametrize("kernel_length", ["L", "2L"])
def test_fft_conv_values_and_gradients_equal_autograd(kernel_length):
    torch.manual_seed(0)
    B, H, L = 3, 4, 37
    u = torch.randn(B, H, L, dtype=torch.double, requires_grad=True)  # (B H L)
    k = torch.randn(H, L if kernel_length == "L" else 2 * L, dtype=torch.double, requires_grad=True)  # (H Lk)
    y, ref = causal_fft_conv(u, k, n=2 * L), _autograd_conv(u, k)  # (B H L)
    assert torch.equal(y, ref)  # the forward is the same sequence of operations
    g = torch.randn_like(y)
    for ours, theirs in zip(torch.autograd.grad(y, (u, k), g), torch.autograd.grad(ref, (u, k), g)):
        assert ours.shape == theirs.shape
        assert torch.allclose(ours, theirs, atol=1e-11)
    assert torch.autograd.gradcheck(causal_fft_conv, (u[:1, :2, :9].detach().requires_grad_(),
                                                      k[:2, :9].detach().requires_grad_()))


@pytest.mark.parametrize("kernel_length", ["L", "2L"])
def test_fft_conv_at_the_fast_length_is_the_direct_sum(kernel_length):
    torch.manual_seed(0)
    B, H, L = 2, 3, 37  # 2L = 74 = 2 * 37: a causal kernel runs at n = 75 instead
    u = torch.randn(B, H, L, dtype=torch.double)  # (B H L)
    k = torch.randn(H, L if kernel_length == "L" else 2 * L, dtype=torch.double)  # (H Lk)
    expected = torch.zeros_like(u)
    for t in range(L):
        for s in range(L):
            if s <= t:
                expected[..., t] += k[:, t - s] * u[..., s]
            elif kernel_length == "2L":  # the anticausal part, wrapped around at 2L
                expected[..., t] += k[:, 2 * L - (s - t)] * u[..., s]
    assert torch.allclose(causal_fft_conv(u, k), expected, atol=1e-10)


def test_fft_length_is_the_next_2_3_5_smooth_number():
    def smooth(m):
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1

    for n in range(1, 3000):
        m = fft_length(n)
        assert m >= n and smooth(m) and not any(smooth(j) for j in range(n, m)), n


def test_fft_conv_stays_float32_under_bf16_autocast():
    torch.manual_seed(0)
    u, k = torch.randn(2, 3, 50), torch.randn(3, 50)  # (B H L), (H L)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = causal_fft_conv(u.bfloat16(), k)  # bf16 activations in, fp32 convolution
    assert y.dtype == torch.float32
    assert torch.allclose(y, causal_fft_conv(u.bfloat16().float(), k), atol=1e-6)


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
@pytest.mark.parametrize("L", [1, 2, 3, 17, 1000])
def test_blocked_vandermonde_equals_direct_powers(disc, L):
    torch.manual_seed(0)
    kernel = S4DKernel(5, 8, disc=disc, trainable_B=True, bidirectional=True, dt_min=0.01, dt_max=0.5).double()
    dt = torch.exp(kernel.log_dt)  # (H)
    A = torch.complex(-torch.exp(kernel.log_A_real), kernel.A_imag)  # (H N/2)
    dtA = A * dt[:, None]  # (H N/2)
    B, C = torch.view_as_complex(kernel.B), torch.view_as_complex(kernel.C)  # (H N/2), (C H N/2)
    if disc == "zoh":
        dA, dB = torch.exp(dtA), (torch.exp(dtA) - 1) / A * B  # (H N/2)
    else:
        dA, dB = (1 + dtA / 2) / (1 - dtA / 2), dt[:, None] * B / (1 - dtA / 2)  # (H N/2)
    powers = dA[..., None] ** torch.arange(L, dtype=torch.double)  # (H N/2 L)
    expected = 2 * torch.einsum("chn,hnl->chl", C * dB, powers).real  # (C H L)
    got = kernel(L)  # (C H L)
    assert got.shape == (2, 5, L)
    assert torch.allclose(got, expected, atol=1e-10, rtol=1e-8)
