"""S4D kernel: a diagonal state space model per channel, materialised as a convolution kernel.

Each of the H channels is x'(t) = A x(t) + B u(t), y(t) = C x(t), with A diagonal holding N/2
complex-conjugate pairs (only one of each pair is stored; the output takes 2 Re(.)). With step dt
the discrete system is (ZOH) dA = exp(dt A), dB = (dA - 1)/A B, or (bilinear)
dA = (1 + dt A/2)/(1 - dt A/2), dB = dt B/(1 - dt A/2), and the kernel is
K[l] = 2 Re(sum_n C_n dA_n^l dB_n), l = 0..L-1.

Initialisations (Gu et al. 2022, "On the Parameterization and Initialization of Diagonal SSMs"):
S4D-Lin A_n = -1/2 + i pi n; S4D-Inv A_n = -1/2 + i (N/pi)(N/(2n+1) - 1); S4D-LegS the eigenvalues
of the normal part of HiPPO-LegS in NPLR form (real part -1/2). With LegS, B is the LegS input in
the eigenbasis, V^* B, with Im(B) clipped to [-B_CLIP, B_CLIP] as the S4 authors do (`B_clip=2.0`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from search_spaces.errors import ConfigError
from workers.optim import register

B_CLIP = 2.0  # the S4 authors clip Im(V^* B) of the LegS initialisation to [-2, 2]


def legs_normal_eigen(N: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Diagonalise the normal part S = A + P P^T of HiPPO-LegS (N x N).

    Returns (Lambda (N/2,) complex128, V (N N/2) complex128, B (N,) float64): the eigenvalues with
    positive imaginary part (one per conjugate pair), their eigenvectors, and the LegS input B.
    """
    n = torch.arange(N, dtype=torch.float64)
    q = torch.sqrt(2 * n + 1)  # (N)
    A = -torch.tril(q[:, None] * q[None, :], diagonal=-1) - torch.diag(n + 1)  # (N N) HiPPO-LegS
    P = torch.sqrt(n + 0.5)  # (N)
    S = A + P[:, None] * P[None, :]  # (N N) = -1/2 I + skew-symmetric
    skew = (S - S.T) / 2  # (N N)
    w, V = torch.linalg.eigh(-1j * skew.to(torch.complex128))  # skew = V diag(i w) V^*
    order = torch.argsort(w, descending=True)[: N // 2]  # one of each +-w pair, largest first
    Lambda = torch.complex(torch.full((N // 2,), -0.5, dtype=torch.float64), w[order])  # (N/2)
    return Lambda, V[:, order], q


def legs_B(N: int, clip: float | None = B_CLIP) -> torch.Tensor:
    """The LegS input B in the eigenbasis of the normal part, V^* B, with Im(B) clipped to
    [-clip, clip] (None: unclipped). Real parts are left as they are.  # (N/2) complex128"""
    _, V, q = legs_normal_eigen(N)  # (N N/2), (N)
    B = V.conj().T @ q.to(torch.complex128)  # (N/2)
    if clip is None:
        return B
    return torch.complex(B.real, B.imag.clamp(-clip, clip))  # (N/2)


def init_A(init: str, H: int, N: int) -> torch.Tensor:
    """The S4D initial A for H channels: (H N/2) complex128."""
    n = torch.arange(N // 2, dtype=torch.float64)
    if init == "lin":
        imag = math.pi * n  # (N/2)
    elif init == "inv":
        imag = (N / math.pi) * (N / (2 * n + 1) - 1)  # (N/2)
    elif init == "legs":
        imag = legs_normal_eigen(N)[0].imag  # (N/2)
    else:
        raise ConfigError(f"model.init: got {init!r}, expected one of lin, inv, legs")
    A = torch.complex(torch.full_like(imag, -0.5), imag)  # (N/2)
    return A.expand(H, N // 2).clone()  # (H N/2)


def init_B(init: str, H: int, N: int) -> torch.Tensor:
    """Initial B: ones, or for LegS the clipped LegS B in the eigenbasis (`legs_B`). (H N/2) complex128."""
    if init == "legs":
        B = legs_B(N)  # (N/2)
    else:
        B = torch.ones(N // 2, dtype=torch.complex128)  # (N/2)
    return B.expand(H, N // 2).clone()  # (H N/2)


def check_kernel_args(kernel: str, H: int, N: int, disc: str) -> None:
    """Refuse a discretisation or size the SSM kernels cannot build (one-line ConfigError)."""
    if disc not in ("zoh", "bilinear"):
        raise ConfigError(f"model.disc: got {disc!r}, expected one of zoh, bilinear")
    if H < 1 or N < 2 or N % 2:
        raise ConfigError(f"{kernel}: got H={H}, N={N}, expected H >= 1 and an even N >= 2")


class S4DKernel(nn.Module):
    """Generates the S4D convolution kernel K (C H L) for H channels, C = 2 if bidirectional else 1.

    Parameters: log_dt (H), log_A_real (H N/2), A_imag (H N/2), C (C H N/2 2) (complex as a real
    view), B (H N/2 2) only if trainable_B (else B = 1). log_dt, A and B are registered with their
    own optimiser settings (`workers.optim.register`: lr `lr`, None for the authors' default; no
    weight decay).
    """

    def __init__(self, H: int, N: int = 64, *, init: str = "lin", disc: str = "zoh",
                 trainable_B: bool = False, dt_min: float = 0.001, dt_max: float = 0.1,
                 lr: float | None = None, bidirectional: bool = False):
        super().__init__()
        check_kernel_args("S4DKernel", H, N, disc)
        self.H, self.N = H, N
        self.init, self.disc, self.trainable_B = init, disc, trainable_B
        self.dt_min, self.dt_max, self.lr, self.bidirectional = dt_min, dt_max, lr, bidirectional
        self.channels = 2 if bidirectional else 1
        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)  # (H)
        A = init_A(init, H, N)  # (H N/2)
        C = torch.randn(self.channels, H, N // 2, dtype=torch.cfloat)  # (C H N/2)
        register(self, "log_dt", log_dt, lr=lr)  # (H)
        register(self, "log_A_real", torch.log(-A.real).float(), lr=lr)  # (H N/2)
        register(self, "A_imag", A.imag.float(), lr=lr)  # (H N/2)
        self.C = nn.Parameter(torch.view_as_real(C))  # (C H N/2 2)
        if trainable_B:
            B = init_B(init, H, N).to(torch.cfloat)  # (H N/2)
            register(self, "B", torch.view_as_real(B), lr=lr)  # (H N/2 2)
        else:
            self.B = None

    def _B(self) -> torch.Tensor:
        if self.B is not None:
            return torch.view_as_complex(self.B)  # (H N/2)
        dtype = torch.complex128 if self.log_dt.dtype == torch.float64 else torch.complex64
        return torch.ones(self.H, self.N // 2, dtype=dtype, device=self.log_dt.device)  # (H N/2)

    def discrete(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The discrete system of the forward direction: (dA, dB, dC), each (H N/2) complex.

        One step is x_k = dA x_{k-1} + dB u_k, y_k = Re(sum_n dC_n x_k,n); dC includes the factor 2
        of the conjugate pairs.
        """
        dt = torch.exp(self.log_dt)  # (H)
        A = torch.complex(-torch.exp(self.log_A_real), self.A_imag)  # (H N/2)
        dtA = A * dt[:, None]  # (H N/2)
        if self.disc == "zoh":
            dA = torch.exp(dtA)  # (H N/2)
            dB = (dA - 1.0) / A * self._B()  # (H N/2)
        else:
            dA = (1.0 + dtA / 2) / (1.0 - dtA / 2)  # (H N/2)
            dB = dt[:, None] * self._B() / (1.0 - dtA / 2)  # (H N/2)
        dC = 2 * torch.view_as_complex(self.C)  # (C H N/2)
        return dA, dB, dC[0]

    def forward(self, L: int) -> torch.Tensor:
        """K[c, h, l] = 2 Re(sum_n C_{c,h,n} dA_{h,n}^l dB_{h,n}).  # (C H L)

        The Vandermonde dA^l is never built: with l = a m + b (m ~ sqrt(L)), dA^l = dA^(a m) dA^b,
        so K is one complex matmul per channel of (C_n dB_n dA_n^(a m)) (q N/2) by dA_n^b (N/2 m):
        H N/2 (q + m) exponentials instead of H N/2 L (the training step's costliest op otherwise).
        """
        dt = torch.exp(self.log_dt)  # (H)
        A = torch.complex(-torch.exp(self.log_A_real), self.A_imag)  # (H N/2)
        dtA = A * dt[:, None]  # (H N/2)
        C = torch.view_as_complex(self.C)  # (C H N/2)
        if self.disc == "zoh":
            CB = C * (torch.exp(dtA) - 1.0) / A * self._B()  # (C H N/2)
            log_dA = dtA  # (H N/2)
        else:
            CB = C * dt[:, None] * self._B() / (1.0 - dtA / 2)  # (C H N/2)
            log_dA = torch.log((1.0 + dtA / 2) / (1.0 - dtA / 2))  # (H N/2)
        m = math.isqrt(max(L, 1) - 1) + 1  # inner block length, m * q >= L
        q = -(-L // m)  # outer blocks
        ell = torch.arange(max(m, q), device=A.device, dtype=dt.dtype)  # (max(m, q))
        inner = torch.exp(log_dA[..., None] * ell[:m])  # (H N/2 m): dA^b
        outer = torch.exp(log_dA[..., None] * (m * ell[:q]))  # (H N/2 q): dA^(a m)
        left = (CB[..., None] * outer).permute(1, 0, 3, 2).reshape(self.H, -1, self.N // 2)  # (H C*q N/2)
        K = torch.bmm(left, inner).real.reshape(self.H, self.channels, q * m)  # (H C q*m)
        return 2 * K.transpose(0, 1)[..., :L]  # (C H L)

    def subset(self, idx) -> "S4DKernel":
        """A new kernel holding copies of channels `idx` (positions in this kernel) only."""
        idx = torch.as_tensor(list(idx), dtype=torch.long, device=self.log_dt.device)  # (H')
        new = S4DKernel(len(idx), self.N, init=self.init, disc=self.disc, trainable_B=self.trainable_B,
                        dt_min=self.dt_min, dt_max=self.dt_max, lr=self.lr, bidirectional=self.bidirectional)
        new = new.to(device=self.log_dt.device, dtype=self.log_dt.dtype)
        with torch.no_grad():
            new.log_dt.copy_(self.log_dt[idx])
            new.log_A_real.copy_(self.log_A_real[idx])
            new.A_imag.copy_(self.A_imag[idx])
            new.C.copy_(self.C[:, idx])
            if self.B is not None:
                new.B.copy_(self.B[idx])
        for name, p in new.named_parameters():
            p.requires_grad_(getattr(self, name).requires_grad)
        new.train(self.training)
        return new
