"""Test support: our own re-implementation of the S4 authors' example.py model layout.

Same module names, so `state_dict()` has their keys (encoder, s4_layers.<i>.…, norms, dropouts,
decoder), and their forward: residual blocks, pre- or post-norm, mean pooling over all positions.
The kernels are computed here independently of `workers.models` (Vandermonde sums for the diagonal
kernels; for DPLR the generating function C~ (I - dA z)^{-1} dB with dense solves at the roots of
unity, from C~ as their kernel stores it), so a match with an imported S4Model is a real check.
"""

from __future__ import annotations

import math

import torch
from torch import nn

c2r, r2c = torch.view_as_real, torch.view_as_complex


class MinimalS4DKernel(nn.Module):  # models/s4/s4d.py S4DKernel: A = -exp(log_A_real) + i A_imag
    def __init__(self, H, N):
        super().__init__()
        self.log_dt = nn.Parameter(torch.rand(H) * (math.log(0.1) - math.log(0.001)) + math.log(0.001))
        self.C = nn.Parameter(c2r(torch.randn(H, N // 2, dtype=torch.cfloat)))
        self.log_A_real = nn.Parameter(torch.log(0.5 + torch.rand(H, N // 2)))
        self.A_imag = nn.Parameter(math.pi * torch.arange(N // 2).float().repeat(H, 1) + torch.rand(H, N // 2))

    def forward(self, L):
        dt = torch.exp(self.log_dt)  # (H)
        A = -torch.exp(self.log_A_real) + 1j * self.A_imag  # (H N/2)
        dtA = A * dt[:, None]
        C = r2c(self.C) * (torch.exp(dtA) - 1.0) / A
        return 2 * torch.einsum("hn,hnl->hl", C, torch.exp(dtA[..., None] * torch.arange(L))).real  # (H L)


class MinimalS4D(nn.Module):
    def __init__(self, H, N):
        super().__init__()
        self.D = nn.Parameter(torch.randn(H))
        self.kernel = MinimalS4DKernel(H, N)
        self.activation = nn.GELU()
        self.output_linear = nn.Sequential(nn.Conv1d(H, 2 * H, kernel_size=1), nn.GLU(dim=-2))

    def forward(self, u):  # (B H L)
        L = u.shape[-1]
        k = self.kernel(L)
        y = torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(k, n=2 * L), n=2 * L)[..., :L]
        y = y + u * self.D[:, None]
        return self.output_linear(self.activation(y)), None


class DiagKernel(nn.Module):  # s4.py SSMKernelDiag: A = -exp(A_real) - i A_imag, dt = exp(inv_dt)
    def __init__(self, H, N, channels, n_ssm=None, disc="zoh"):
        super().__init__()
        S = n_ssm or H
        self.disc, self.channels, self.H = disc, channels, H
        self.inv_dt = nn.Parameter(torch.rand(H, 1) * (math.log(0.1) - math.log(0.01)) + math.log(0.01))
        self.A_real = nn.Parameter(torch.log(0.5 + torch.rand(S, N // 2)))
        self.A_imag = nn.Parameter(math.pi * torch.arange(N // 2).float().repeat(S, 1) + torch.rand(S, N // 2))
        self.B = nn.Parameter(c2r(torch.randn(1, S, N // 2, dtype=torch.cfloat)))
        self.C = nn.Parameter(c2r(torch.randn(channels, H, N // 2, dtype=torch.cfloat)))

    def params(self):
        rep = self.H // self.A_real.shape[0]
        A = (-torch.exp(self.A_real) - 1j * self.A_imag).repeat(rep, 1)  # (H N/2)
        B = r2c(self.B)[0].repeat(rep, 1)  # (H N/2)
        return torch.exp(self.inv_dt), A, B, r2c(self.C)

    def forward(self, L):
        dt, A, B, C = self.params()
        dtA = dt * A
        if self.disc == "zoh":
            v, x = C * B * (torch.exp(dtA) - 1.0) / A, dtA
        else:
            v, x = C * B * dt / (1.0 - dtA / 2), torch.log((1.0 + dtA / 2) / (1.0 - dtA / 2))
        return 2 * torch.einsum("chn,hnl->chl", v, torch.exp(x[..., None] * torch.arange(L))).real  # (c H L)


class DPLRKernel(DiagKernel):  # s4.py SSMKernelDPLR: A = diag(A) - P P^*, bilinear, C holds C~
    def __init__(self, H, N, channels, n_ssm=None, l_kernel=0):
        super().__init__(H, N, channels, n_ssm)
        S = self.A_real.shape[0]
        self.P = nn.Parameter(c2r(0.3 * torch.randn(1, S, N // 2, dtype=torch.cfloat)))
        self.register_buffer("l_kernel", torch.tensor(l_kernel))

    def dense(self):
        """dA (H N N), dB (H N) of the full conjugate system, bilinear, in complex128."""
        dt, A, B, _ = self.params()
        rep = self.H // self.A_real.shape[0]
        P = r2c(self.P)[0].repeat(rep, 1)
        full = lambda t: torch.cat([t, t.conj()], -1).to(torch.complex128)  # noqa: E731
        Af = torch.diag_embed(full(A)) - full(P)[:, :, None] * full(P).conj()[:, None, :]
        eye = torch.eye(Af.shape[-1], dtype=Af.dtype)
        half = (dt.to(torch.float64) / 2)[:, :, None]
        M = eye - half * Af
        return torch.linalg.solve(M, eye + half * Af), torch.linalg.solve(M, dt.to(torch.float64) * full(B))

    def forward(self, L):
        dA, dB = self.dense()
        Lk = int(self.l_kernel) or L  # C~ was set up for l_kernel; a fresh kernel sets it up for L
        Ct = torch.cat([r2c(self.C), r2c(self.C).conj()], -1).to(torch.complex128)  # (c H N)
        if int(self.l_kernel) == 0:
            Ct = Ct - torch.einsum("chn,hnm->chm", Ct, torch.linalg.matrix_power(dA, Lk))
        z = torch.exp(-2j * math.pi * torch.arange(Lk // 2 + 1, dtype=torch.float64) / Lk)  # (Lk/2+1)
        eye = torch.eye(dA.shape[-1], dtype=dA.dtype)
        res = torch.linalg.solve(eye - dA[:, None] * z[None, :, None, None], dB[:, None, :, None].expand(-1, len(z), -1, 1))
        K_hat = torch.einsum("chn,hjn->chj", Ct, res[..., 0])  # (c H Lk/2+1)
        return torch.fft.irfft(K_hat, n=Lk)[..., :L].float()  # (c H L)


class FFTConv(nn.Module):
    def __init__(self, H, N, bidirectional, mode, n_ssm=None, l_kernel=0, disc="zoh"):
        super().__init__()
        self.D = nn.Parameter(torch.randn(1, H))
        c = 2 if bidirectional else 1
        self.bidirectional = bidirectional
        self.kernel = DPLRKernel(H, N, c, n_ssm, l_kernel) if mode == "dplr" else DiagKernel(H, N, c, n_ssm, disc)
        self.activation = nn.GELU()

    def forward(self, x):  # (B H L)
        L = x.shape[-1]
        k = self.kernel(L)  # (c H L)
        if self.bidirectional:
            k = nn.functional.pad(k[0], (0, L)) + nn.functional.pad(k[1].flip(-1), (L, 0))
        else:
            k = k[0]
        y = torch.fft.irfft(torch.fft.rfft(x, n=2 * L) * torch.fft.rfft(k, n=2 * L), n=2 * L)[..., :L]
        return self.activation(y + x * self.D[0][:, None])


class S4Block(nn.Module):
    def __init__(self, H, N, bidirectional=False, mode="dplr", n_ssm=None, l_kernel=0, disc="zoh"):
        super().__init__()
        self.layer = FFTConv(H, N, bidirectional, mode, n_ssm, l_kernel, disc)
        self.output_linear = nn.Sequential(nn.Linear(H, 2 * H), nn.GLU(dim=-1))

    def forward(self, x):  # (B H L)
        y = self.layer(x)
        return self.output_linear(y.transpose(1, 2)).transpose(1, 2), None


class ExampleModel(nn.Module):
    """example.py's S4Model: encoder -> residual (pre/post-norm) layers -> mean -> decoder."""

    def __init__(self, d_input, d_output, H, n_layers, N=16, layer="s4d", prenorm=False, norm="layer",
                 tokens=False, **layer_args):
        super().__init__()
        self.prenorm, self.norm_kind = prenorm, norm
        self.encoder = nn.Embedding(d_input, H) if tokens else nn.Linear(d_input, H)
        make = (lambda: MinimalS4D(H, N)) if layer == "s4d" else (lambda: S4Block(H, N, **layer_args))
        self.s4_layers = nn.ModuleList(make() for _ in range(n_layers))
        self.norms = nn.ModuleList((nn.LayerNorm(H) if norm == "layer" else nn.BatchNorm1d(H)) for _ in range(n_layers))
        self.dropouts = nn.ModuleList(nn.Dropout1d(0.1) for _ in range(n_layers))
        self.decoder = nn.Linear(H, d_output)
        if norm == "batch":  # trained-looking running statistics
            for bn in self.norms:
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)

    def _norm(self, norm, x):
        return norm(x.transpose(-1, -2)).transpose(-1, -2) if self.norm_kind == "layer" else norm(x)

    def forward(self, x):
        x = self.encoder(x).transpose(-1, -2)  # (B H L)
        for layer, norm, dropout in zip(self.s4_layers, self.norms, self.dropouts):
            z = self._norm(norm, x) if self.prenorm else x
            z, _ = layer(z)
            x = dropout(z) + x
            if not self.prenorm:
                x = self._norm(norm, x)
        return self.decoder(x.mean(dim=-1))
