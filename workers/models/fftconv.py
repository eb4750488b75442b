"""Causal FFT convolution y = k * u (circular of length n >= 2L, first L outputs) with its own backward.

  y[b, h, t] = sum_s u[b, h, s] k[h, (t - s) mod n],  t < L

k (H Lk) is the time-domain kernel, Lk <= n: the causal K (Lk = L), or the causal part followed by
the flipped anticausal part (Lk = n = 2L, `workers.models.layer.time_kernel`). With g = dLoss/dy
zero-padded to n and ^ the rfft of length n, the gradients are circular correlations:

  du = irfft(g^ conj(k^))[:L]          dk = irfft(sum_b g^ conj(u^))[:Lk]

so the backward costs one rfft and one irfft over the B H rows, where autograd through
rfft -> product -> irfft -> slice spends a full-length complex FFT on rfft's backward, a second
complex product for k's gradient per batch row, and zero-filled copies for the padding and the
slice. Forward values equal the autograd version's exactly. A causal k may use any n >= 2L - 1 (`fft_length` picks the next 2^a 3^b 5^c: batches are trimmed to
their longest sequence, and 2L = 2 * 11 * 167 runs at half the speed of 3750). Everything runs in float32 / complex64
(or float64 when the inputs are): under autocast the inputs are cast up, half-precision FFTs being
restricted to power-of-two sizes and inaccurate.
"""

from __future__ import annotations

import torch


class _CausalFFTConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: torch.Tensor, k: torch.Tensor, n: int) -> torch.Tensor:
        L, Lk = u.shape[-1], k.shape[-1]
        u_f = torch.fft.rfft(u, n=n)  # (B H n/2+1)
        k_f = torch.fft.rfft(k, n=n)  # (H n/2+1)
        ctx.save_for_backward(u_f, k_f)
        ctx.sizes = (L, Lk, n)
        return torch.fft.irfft(u_f * k_f, n=n)[..., :L]  # (B H L)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        u_f, k_f = ctx.saved_tensors
        L, Lk, n = ctx.sizes
        g_f = torch.fft.rfft(g, n=n)  # (B H n/2+1)
        du = dk = None
        if ctx.needs_input_grad[0]:
            du = torch.fft.irfft(g_f * k_f.conj(), n=n)[..., :L]  # (B H L)
        if ctx.needs_input_grad[1]:
            gk_f = torch.einsum("bhf,bhf->hf", g_f, u_f.conj())  # (H n/2+1)
            dk = torch.fft.irfft(gk_f, n=n)[..., :Lk]  # (H Lk)
        return du, dk, None


def fft_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (sizes the FFT libraries transform fastest)."""
    best = 1 << max(n - 1, 0).bit_length()  # the next power of two
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def causal_fft_conv(u: torch.Tensor, k: torch.Tensor, n: int | None = None) -> torch.Tensor:
    """u (B H L), k (H Lk) -> y (B H L) by FFTs of length n: default `fft_length(2L)` for a causal k
    (Lk = L), exactly 2L for the two-sided one (Lk = 2L, whose anticausal part wraps around at 2L)."""
    L = u.shape[-1]
    if n is None:
        n = fft_length(2 * L) if k.shape[-1] <= L else 2 * L
    dtype = torch.float64 if torch.float64 in (u.dtype, k.dtype) else torch.float32
    with torch.autocast(u.device.type, enabled=False):
        return _CausalFFTConv.apply(u.to(dtype), k.to(dtype), n)  # (B H L)
