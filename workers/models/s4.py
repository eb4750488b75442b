"""S4 kernel: a diagonal-plus-low-rank (DPLR) state space model per channel, as a convolution kernel.

Each of the H channels is x'(t) = A x(t) + B u(t), y(t) = C x(t) with N states and
A = Lambda - P P^* (normal plus low rank, NPLR), written in the eigenbasis of the normal part:
Lambda diagonal, P a rank-1 column. The real N-state system is stored as N/2 complex-conjugate
modes: Lambda_full = [Lambda, conj(Lambda)], likewise P, B, C, so every kernel is real.

Discretisation is bilinear (the closed form below needs it):
  dA = (I - dt/2 A)^{-1} (I + dt/2 A),   dB = (I - dt/2 A)^{-1} dt B,   K_l = C dA^l dB.
The truncated generating function at the L-th roots of unity z_j = exp(-2 pi i j / L) is
  K^(z) = sum_{l<L} K_l z^l = C~ (I - dA z)^{-1} dB,   C~ = C (I - dA^L)   (z^L = 1),
and, multiplying through by (I - dt/2 A),
  K^(z) = dt C~ [a I - beta A]^{-1} B,   a = 1 - z,   beta = (1 + z) dt / 2.
With R = diag(1 / (a - beta Lambda_n)) the Woodbury identity turns the inverse into Cauchy sums
  K^(z) = dt [k00 - beta k01 k10 / (1 + beta k11)],
  k00 = C~ R B,  k01 = C~ R P,  k10 = P^* R B,  k11 = P^* R P,
and K = irfft(K^) over the L/2 + 1 non-negative frequencies. This form has no pole at z = -1.
C~ is computed from the dense discrete A for the given L (dA^L by repeated squaring), so C is the
length-independent output matrix and any L works.

Initialisation "legs": HiPPO-LegS A = S - P P^T in NPLR form (S normal, P_n = sqrt(n + 1/2)),
Lambda, P, B in the eigenbasis of S, Im(B) clipped to [-2, 2] as in the S4 authors' NPLR
initialisation (`B_clip=2.0`; with N = 64 the clip changes 11 of the 32 modes). "lin" and "inv"
take the S4D diagonal initialisations with P = 0 (the DPLR model then reduces to a bilinear S4D).
The DPLR kernel is bilinear only, like the authors' DPLR kernel: `disc="zoh"` is refused with a
ConfigError (the Cauchy form above relies on the bilinear transform).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from search_spaces.errors import ConfigError
from workers.models.s4d import check_kernel_args, init_A, legs_B, legs_normal_eigen
from workers.optim import register

ZOH_REFUSED = ("model.disc: got 'zoh' with model.kind 's4', expected bilinear "
               "(the S4 DPLR kernel is bilinear only; use kind s4d for zoh)")


def nplr_init(init: str, H: int, N: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Initial (Lambda, P, B), each (H N/2) complex128, for init in lin, inv, legs."""
    if init == "legs":
        Lambda, V, _ = legs_normal_eigen(N)  # (N/2), (N N/2)
        n = torch.arange(N, dtype=torch.float64)
        P_legs = torch.sqrt(n + 0.5).to(torch.complex128)  # (N)
        P = V.conj().T @ P_legs  # (N/2)
        B = legs_B(N)  # (N/2) Im(B) clipped to [-2, 2]
        expand = lambda t: t.expand(H, N // 2).clone()  # noqa: E731
        return expand(Lambda), expand(P), expand(B)
    Lambda = init_A(init, H, N)  # (H N/2); raises ConfigError on an unknown init
    return Lambda, torch.zeros_like(Lambda), torch.ones_like(Lambda)


def conj_full(x: torch.Tensor) -> torch.Tensor:
    """(... N/2) half modes -> (... N) all modes [x, conj(x)]."""
    return torch.cat([x, x.conj()], dim=-1)  # (... N)


class S4Kernel(nn.Module):
    """Generates the S4 (DPLR) convolution kernel K (C H L), C = 2 if bidirectional else 1.

    Parameters: log_dt (H), log_A_real (H N/2), A_imag (H N/2), B (H N/2 2) (a buffer unless
    trainable_B), P (1 H N/2 2), C (C H N/2 2); complex tensors are stored as real views.
    log_dt, A, B and P are registered with their own optimiser settings (`workers.optim.register`:
    lr `lr`, None for the authors' default; no weight decay).
    """

    def __init__(self, H: int, N: int = 64, *, init: str = "legs", disc: str = "bilinear",
                 trainable_B: bool = True, dt_min: float = 0.001, dt_max: float = 0.1,
                 lr: float | None = None, bidirectional: bool = False):
        super().__init__()
        check_kernel_args("S4Kernel", H, N, disc)
        if disc != "bilinear":
            raise ConfigError(ZOH_REFUSED)
        self.H, self.N = H, N
        self.init, self.disc, self.trainable_B = init, disc, trainable_B
        self.dt_min, self.dt_max, self.lr, self.bidirectional = dt_min, dt_max, lr, bidirectional
        self.channels = 2 if bidirectional else 1
        Lambda, P, B = nplr_init(init, H, N)  # (H N/2) each
        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)  # (H)
        C = torch.randn(self.channels, H, N // 2, dtype=torch.cfloat)  # (C H N/2)
        register(self, "log_dt", log_dt, lr=lr)  # (H)
        register(self, "log_A_real", torch.log(-Lambda.real).float(), lr=lr)  # (H N/2)
        register(self, "A_imag", Lambda.imag.float(), lr=lr)  # (H N/2)
        register(self, "P", torch.view_as_real(P.to(torch.cfloat))[None].clone(), lr=lr)  # (1 H N/2 2)
        self.C = nn.Parameter(torch.view_as_real(C))  # (C H N/2 2)
        B = torch.view_as_real(B.to(torch.cfloat)).clone()  # (H N/2 2)
        register(self, "B", B, lr=lr if trainable_B else 0.0)  # a buffer unless trainable_B

    # ---- the continuous and discrete systems ---------------------------------------------------
    def nplr(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(dt (H), Lambda (H N/2), P (H N/2), B (H N/2), C (C H N/2)) as complex tensors."""
        dt = torch.exp(self.log_dt)  # (H)
        Lambda = torch.complex(-torch.exp(self.log_A_real), self.A_imag)  # (H N/2)
        P = torch.view_as_complex(self.P)[0]  # (H N/2)
        B = torch.view_as_complex(self.B)  # (H N/2)
        C = torch.view_as_complex(self.C)  # (C H N/2)
        return dt, Lambda, P, B, C

    def dense_discrete(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The bilinear discrete system over all N modes: dA (H N N), dB (H N)."""
        dt, Lambda, P, B, _ = self.nplr()
        Pf = conj_full(P)  # (H N)
        A = torch.diag_embed(conj_full(Lambda)) - Pf[:, :, None] * Pf.conj()[:, None, :]  # (H N N)
        eye = torch.eye(self.N, dtype=A.dtype, device=A.device)  # (N N)
        half = (dt / 2).to(A.dtype)[:, None, None]  # (H 1 1)
        M = eye - half * A  # (H N N)
        dA = torch.linalg.solve(M, eye + half * A)  # (H N N)
        dB = torch.linalg.solve(M, dt.to(A.dtype)[:, None] * conj_full(B))  # (H N)
        return dA, dB

    def c_tilde(self, L: int) -> torch.Tensor:
        """C~ = C (I - dA^L) on the N/2 stored modes (the rest are conjugates).  # (C H N/2)"""
        dA, _ = self.dense_discrete()  # (H N N)
        dA_L = torch.linalg.matrix_power(dA, L)  # (H N N)
        Cf = conj_full(torch.view_as_complex(self.C))  # (C H N)
        Ct = Cf - torch.einsum("chn,hnm->chm", Cf, dA_L)  # (C H N)
        return Ct[..., : self.N // 2]  # (C H N/2)

    # ---- the kernel ------------------------------------------------------------------------------
    def forward(self, L: int) -> torch.Tensor:
        """K[c, h, l] = C_c dA_h^l dB_h by Cauchy sums at the roots of unity.  # (C H L)"""
        dt, Lambda, P, B, _ = self.nplr()
        Ct = self.c_tilde(L)  # (C H N/2)
        j = torch.arange(L // 2 + 1, device=dt.device, dtype=dt.dtype)  # (Lh)
        z = torch.exp(torch.complex(torch.zeros_like(j), -2 * math.pi * j / L))  # (Lh) roots of unity
        a = 1 - z  # (Lh)
        beta = (1 + z) * (dt / 2)[:, None]  # (H Lh)
        r = 1 / (a - beta[:, None, :] * Lambda[:, :, None])  # (H N/2 Lh) stored modes
        r_conj = 1 / (a - beta[:, None, :] * Lambda.conj()[:, :, None])  # (H N/2 Lh) conjugate modes
        Pc = P.conj()  # (H N/2) the row P^*
        v = torch.cat([Ct * B, Ct * P, (Pc * B)[None], (Pc * P)[None]])  # (2C+2 H N/2)
        # sum over all N modes: the conjugate half has conjugated numerators
        k = torch.einsum("vhn,hnl->vhl", v, r) + torch.einsum("vhn,hnl->vhl", v.conj(), r_conj)  # (V H Lh)
        c = self.channels
        k00, k01, k10, k11 = k[:c], k[c: 2 * c], k[2 * c], k[2 * c + 1]  # (C H Lh) x2, (H Lh) x2
        K_hat = dt[:, None] * (k00 - beta * k01 * k10 / (1 + beta * k11))  # (C H Lh)
        return torch.fft.irfft(K_hat, n=L)  # (C H L)

    def subset(self, idx) -> "S4Kernel":
        """A new kernel holding copies of channels `idx` (positions in this kernel) only."""
        idx = torch.as_tensor(list(idx), dtype=torch.long, device=self.log_dt.device)  # (H')
        new = S4Kernel(len(idx), self.N, init=self.init, disc=self.disc, trainable_B=self.trainable_B,
                       dt_min=self.dt_min, dt_max=self.dt_max, lr=self.lr, bidirectional=self.bidirectional)
        new = new.to(device=self.log_dt.device, dtype=self.log_dt.dtype)
        with torch.no_grad():
            new.log_dt.copy_(self.log_dt[idx])
            new.log_A_real.copy_(self.log_A_real[idx])
            new.A_imag.copy_(self.A_imag[idx])
            new.B.copy_(self.B[idx])
            new.P.copy_(self.P[:, idx])
            new.C.copy_(self.C[:, idx])
        for name, p in new.named_parameters():
            p.requires_grad_(getattr(self, name).requires_grad)
        new.train(self.training)
        return new
