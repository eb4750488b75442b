"""SSMConv: one layer's per-channel SSM operators (conv with K plus D u) under operator pruning.

The layer was built for `channels` (H) channels and holds SSM parameters only for the kept ones
(`kept`, original numbering). For u (B H L) it returns, before the activation:
  kept channel h:   y_h = K_h * u_h + D_h u_h     (causal FFT convolution, length 2L)
  pruned channel h: y_h = u_h (bypass "identity")   or   nothing (bypass "zero": the output has only
                    the H_kept kept channels and the block's mixing Linear drops those columns).
An optional `mask` (bool over the held channels) turns held channels off without removing their
parameters: that is the masked reference of `workers.pruning.masked`.

Output layout with identity bypass: the H output channels come kept-first, `order` = kept + pruned
(original numbering, each part sorted), and the block's mixing Linear holds its columns in that
order (`output_channels()`; `S4Block.compacted` permutes them). The layer then never scatters: in
eval it gathers u into the output once and overwrites the kept rows in place with the SSM output,
so a pruned channel costs one row copy and nothing else. A dense layer keeps the original order.

In eval mode with gradients off, fft(K) is cached per length L; the cache key holds `training`
and each kernel parameter's and buffer's (data_ptr, _version, dtype, device), so optimiser steps, `load_state_dict`,
`train()` and `.to()` all invalidate it. `kernel_mode = "per-forward"` disables the cache.
"""

from __future__ import annotations

import torch
from torch import nn

from search_spaces.errors import ConfigError
from workers.models.fftconv import causal_fft_conv
from workers.models.s4d import S4DKernel
from workers.models.spec import ModelSpec

BYPASS_MODES = ("identity", "zero")
KERNEL_MODES = ("cached", "per-forward")


def kernel_class(kind: str):
    """The kernel module for `kind`: S4DKernel, or S4Kernel (imported lazily)."""
    if kind == "s4d":
        return S4DKernel
    if kind == "s4":
        from workers.models.s4 import S4Kernel

        return S4Kernel
    raise ConfigError(f"model.kind: got {kind!r}, expected one of s4d, s4")


def build_kernel(spec: ModelSpec, H: int) -> nn.Module:
    return kernel_class(spec.kind)(
        H=H, N=spec.d_state, init=spec.init, disc=spec.disc, trainable_B=spec.trainable_B,
        dt_min=spec.dt_min, dt_max=spec.dt_max, lr=spec.ssm_lr, bidirectional=spec.bidirectional)


def time_kernel(K: torch.Tensor, L: int) -> torch.Tensor:
    """The convolution kernel of the length-2L circular convolution from K (C H L): K[0] (H L), or
    with C = 2 the causal part followed by the flipped anticausal one (H 2L)."""
    if K.shape[0] == 2:  # y_t = sum_{s<=t} K0[t-s] u_s + sum_{s>t} K1[s-t-1] u_s
        return nn.functional.pad(K[0], (0, L)) + nn.functional.pad(K[1].flip(-1), (L, 0))  # (H 2L)
    return K[0]  # (H L)


def fft_kernel(K: torch.Tensor, L: int) -> torch.Tensor:
    """rfft of the length-2L convolution kernel from K (C H L); C = 2 adds the anticausal part."""
    return torch.fft.rfft(time_kernel(K, L), n=2 * L)  # (H L+1)


class SSMConv(nn.Module):
    def __init__(self, spec: ModelSpec, kept=None, bypass: str = "identity", kernel: nn.Module | None = None):
        super().__init__()
        H = spec.d_model
        if bypass not in BYPASS_MODES:
            raise ConfigError(f"bypass: got {bypass!r}, expected one of {', '.join(BYPASS_MODES)}")
        kept = list(range(H)) if kept is None else sorted(int(k) for k in kept)
        self.channels = H
        self.bypass = bypass
        self.register_buffer("kept", torch.tensor(kept, dtype=torch.long))  # (H_kept)
        pruned = sorted(set(range(H)) - set(kept))
        self.register_buffer("pruned", torch.tensor(pruned, dtype=torch.long), persistent=False)  # (H - H_kept)
        self.register_buffer("order", torch.tensor(kept + pruned, dtype=torch.long), persistent=False)  # (H)
        self.kernel = build_kernel(spec, len(kept)) if kernel is None else kernel
        self.D = nn.Parameter(torch.randn(len(kept)))  # (H_kept)
        self.register_buffer("mask", None, persistent=False)  # (H_kept) bool; only on masked references
        self.kernel_mode = "cached"
        self._cache: tuple | None = None  # (key, k_f)

    # ---- copies keep the `_optim` tags (Parameter.__deepcopy__ and pickling drop attributes) ----
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_optim_tags"] = {name: dict(p._optim) for name, p in self.named_parameters() if hasattr(p, "_optim")}
        return state

    def __setstate__(self, state):
        tags = state.pop("_optim_tags", {})
        super().__setstate__(state)
        for name, p in self.named_parameters():
            if name in tags:
                p._optim = dict(tags[name])

    # ---- pruning state -------------------------------------------------------------------------
    @property
    def dense(self) -> bool:
        return len(self.kept) == self.channels

    def effective_kept(self) -> list[int]:
        kept = self.kept.tolist()
        if self.mask is None:
            return kept
        return [k for k, on in zip(kept, self.mask.tolist()) if on]

    @property
    def out_channels(self) -> int:
        """Width of the output: H for identity bypass, H_kept for zero bypass."""
        return self.channels if self.bypass == "identity" else len(self.kept)

    def output_channels(self) -> list[int]:
        """The original channel of each output position: kept + pruned (identity), kept (zero)."""
        return self.order.tolist() if self.bypass == "identity" else self.kept.tolist()

    # ---- kernel and its cache ------------------------------------------------------------------
    def _cache_key(self, L: int) -> tuple:
        tensors = [t for mod in self.kernel.modules()  # read each call: replaced tensors count too
                   for t in (*mod._parameters.values(), *mod._buffers.values()) if t is not None]
        return (L, self.training) + tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)

    def kernel_fft(self, L: int) -> torch.Tensor:
        """fft of the kernel for length L, cached in eval mode without gradients.  # (H_kept L+1)"""
        use_cache = self.kernel_mode == "cached" and not self.training and not torch.is_grad_enabled()
        if use_cache:
            key = self._cache_key(L)
            if self._cache is not None and self._cache[0] == key:
                return self._cache[1]
        k_f = fft_kernel(self.kernel_fp32(L), L)  # (H_kept L+1)
        self._cache = (key, k_f) if use_cache else None
        return k_f

    def kernel_fp32(self, L: int) -> torch.Tensor:
        """K (C H_kept L) computed in float32 / complex64 (or float64) even under autocast."""
        with torch.autocast(self.D.device.type, enabled=False):
            return self.kernel(L)  # (C H_kept L)

    def clear_cache(self) -> None:
        self._cache = None

    def _apply(self, fn, *args, **kwargs):
        self._cache = None
        return super()._apply(fn, *args, **kwargs)

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    # ---- forward -------------------------------------------------------------------------------
    def ssm(self, u: torch.Tensor) -> torch.Tensor:
        """K * u + D u on the held channels: u (B H_kept L) -> (B H_kept L)."""
        L = u.shape[-1]
        if torch.is_grad_enabled():  # training: the convolution with its own, cheaper backward
            y = causal_fft_conv(u, time_kernel(self.kernel_fp32(L), L))  # (B H_kept L), float32
            return torch.addcmul(y, self.D[:, None], u)  # (B H_kept L)
        k_f = self.kernel_fft(L)  # (H_kept L+1)
        u_f = torch.fft.rfft(u, n=2 * L)  # (B H_kept L+1)
        y = torch.fft.irfft(u_f * k_f, n=2 * L)[..., :L]  # (B H_kept L)
        return torch.addcmul(y, self.D[:, None], u)  # (B H_kept L)

    def ssm_(self, u: torch.Tensor) -> torch.Tensor:
        """In place, without autograd: u (B H_kept L) <- K * u + D u; returns u."""
        L = u.shape[-1]
        u_f = torch.fft.rfft(u, n=2 * L)  # (B H_kept L+1)
        y = torch.fft.irfft(u_f * self.kernel_fft(L), n=2 * L)[..., :L]  # (B H_kept L)
        return torch.addcmul(y, self.D[:, None], u, out=u)  # (B H_kept L), one pass

    def _off(self, y_kept: torch.Tensor, u_kept: torch.Tensor) -> torch.Tensor:
        """The masked reference: held channels outside the mask bypass (identity) or give 0 (zero)."""
        if self.mask is None:
            return y_kept
        fill = u_kept if self.bypass == "identity" else torch.zeros_like(u_kept)  # (B H_kept ...)
        mask = self.mask.view(-1, *([1] * (y_kept.dim() - 2)))  # (H_kept 1...)
        return torch.where(mask, y_kept, fill)  # (B H_kept ...)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u (B H L) -> y (B H L) for identity bypass (kept-first order), (B H_kept L) for zero bypass."""
        if not self.dense:  # gathering channel rows of an L-major view is ~40x slower than of rows
            u = u.contiguous()  # (B H L)
        if self.dense or self.bypass == "zero":
            u_kept = u if self.dense else u.index_select(1, self.kept)  # (B H_kept L)
            if not self.dense and self.mask is None and not torch.is_grad_enabled():
                return self.ssm_(u_kept)  # (B H_kept L): the gathered copy is overwritten in place
            return self._off(self.ssm(u_kept), u_kept)  # (B H_out L)
        if self.mask is None and not torch.is_grad_enabled():
            out = u.index_select(1, self.order)  # (B H L): kept rows first, pruned rows = u
            self.ssm_(out[:, : len(self.kept)])  # kept rows overwritten in place
            return out  # (B H L)
        u_kept = u.index_select(1, self.kept)  # (B H_kept L)
        y_kept = self._off(self.ssm(u_kept), u_kept)  # (B H_kept L)
        return torch.cat([y_kept, u.index_select(1, self.pruned)], dim=1)  # (B H L), pruned channels = u

    # ---- step (recurrent) mode -----------------------------------------------------------------
    def default_state(self, batch: int) -> torch.Tensor:
        if not hasattr(self.kernel, "discrete") or getattr(self.kernel, "bidirectional", False):
            raise ConfigError("step mode: expected a unidirectional S4D model (got a bidirectional or S4 layer)")
        dA, _, _ = self.kernel.discrete()
        return torch.zeros(batch, *dA.shape, dtype=dA.dtype, device=dA.device)  # (B H_kept N/2)

    def step(self, u: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step: u (B H) -> y (B H) or (B H_kept) for zero bypass; state (B H_kept N/2)."""
        dA, dB, dC = self.kernel.discrete()  # (H_kept N/2) each
        u_kept = u if self.dense else u.index_select(1, self.kept)  # (B H_kept)
        state = dA * state + dB * u_kept[..., None]  # (B H_kept N/2)
        y_kept = self._off((dC * state).sum(-1).real + self.D * u_kept, u_kept)  # (B H_kept)
        if self.bypass == "zero" or self.dense:
            return y_kept, state
        return torch.cat([y_kept, u.index_select(1, self.pruned)], dim=1), state  # (B H) kept-first

    # ---- compaction ----------------------------------------------------------------------------
    def compacted(self, spec: ModelSpec, kept: list[int], bypass: str) -> "SSMConv":
        """A new layer holding copies of the SSM parameters of `kept` (original numbering)."""
        position = {k: i for i, k in enumerate(self.kept.tolist())}
        idx = [position[k] for k in sorted(kept)]
        kernel = self.kernel.subset(idx)
        new = SSMConv(spec, kept=sorted(kept), bypass=bypass, kernel=kernel)
        new = new.to(device=self.D.device, dtype=self.D.dtype)
        with torch.no_grad():
            new.D.copy_(self.D[torch.tensor(idx, dtype=torch.long, device=self.D.device)])
        new.D.requires_grad_(self.D.requires_grad)
        new.kernel_mode = self.kernel_mode
        new.train(self.training)
        return new
