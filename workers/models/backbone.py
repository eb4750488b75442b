"""S4Model: encoder -> n_layers S4Blocks -> pool over length -> decoder.

x is (B L) int64 tokens (0 = padding; nn.Embedding) or (B L d_input) floats (nn.Linear).
`lengths` (B,) gives the real length of each sequence: pool "mean" averages positions < length,
pool "last" takes position length - 1. `kept` (one list per layer, original numbering) and
`bypass` describe operator pruning; kept=None is the dense model.
"""

from __future__ import annotations

import torch
from torch import nn

from search_spaces.errors import ConfigError
from workers.models.block import S4Block
from workers.models.kept import validate_kept
from workers.models.layer import BYPASS_MODES, KERNEL_MODES
from workers.models.spec import ModelSpec


class S4Model(nn.Module):
    def __init__(self, spec: ModelSpec, kept=None, bypass: str = "identity"):
        super().__init__()
        if bypass not in BYPASS_MODES:
            raise ConfigError(f"bypass: got {bypass!r}, expected one of {', '.join(BYPASS_MODES)}")
        if kept is None:
            kept = [None] * spec.n_layers
        else:
            kept = validate_kept(kept, [list(range(spec.d_model))] * spec.n_layers)
        self.spec = spec
        self.bypass = bypass
        H = spec.d_model
        if spec.input_kind == "tokens":
            self.encoder = nn.Embedding(spec.d_input, H, padding_idx=0)
        else:
            self.encoder = nn.Linear(spec.d_input, H)
        self.blocks = nn.ModuleList(S4Block(spec, kept=k, bypass=bypass) for k in kept)
        self.decoder = nn.Linear(H, spec.d_output)

    # ---- helpers -------------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor, lengths: torch.Tensor | None) -> None:
        spec = self.spec
        if spec.input_kind == "tokens":
            if x.dim() != 2 or x.dtype not in (torch.int64, torch.int32):
                raise ConfigError(f"model input: got shape {tuple(x.shape)} dtype {x.dtype}, expected (B L) integer tokens")
            if x.numel() and (int(x.min()) < 0 or int(x.max()) >= spec.d_input):
                bad = int(x.min()) if int(x.min()) < 0 else int(x.max())
                raise ConfigError(f"model input: token {bad} out of range, expected 0..{spec.d_input - 1} (model.d_input)")
        elif x.dim() != 3 or x.shape[-1] != spec.d_input or not x.is_floating_point():
            raise ConfigError(f"model input: got shape {tuple(x.shape)} dtype {x.dtype}, expected (B L {spec.d_input}) floats")
        if lengths is not None and tuple(lengths.shape) != (x.shape[0],):
            raise ConfigError(f"model lengths: got shape {tuple(lengths.shape)}, expected ({x.shape[0]},)")

    def set_kernel_mode(self, mode: str) -> None:
        """"cached" (fft(K) cached in eval mode) or "per-forward" (recompute K every call)."""
        if mode not in KERNEL_MODES:
            raise ConfigError(f"kernel mode: got {mode!r}, expected one of {', '.join(KERNEL_MODES)}")
        for block in self.blocks:
            block.conv.kernel_mode = mode
            block.conv.clear_cache()

    # ---- convolution mode ----------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder + blocks: x -> (B H L)."""
        h = self.encoder(x).transpose(1, 2).contiguous()  # (B H L); L-contiguous rows for FFTs and channel gathers
        for block in self.blocks:
            h = block(h)  # (B H L)
        return h

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x (B L) or (B L d_input), lengths (B,) -> logits (B d_output)."""
        self._check_input(x, lengths)
        h = self.features(x)  # (B H L)
        B, _, L = h.shape
        if lengths is None:
            lengths = torch.full((B,), L, dtype=torch.long, device=h.device)  # (B)
        lengths = lengths.to(h.device).clamp(1, L)  # (B)
        if self.spec.pool == "mean":
            mask = torch.arange(L, device=h.device)[None, :] < lengths[:, None]  # (B L)
            pooled = (h * mask[:, None, :]).sum(-1) / lengths[:, None].to(h.dtype)  # (B H)
        else:
            index = (lengths - 1)[:, None, None].expand(B, h.shape[1], 1)  # (B H 1)
            pooled = h.gather(-1, index)[..., 0]  # (B H)
        return self.decoder(pooled)  # (B d_output)

    # ---- step (recurrent) mode -----------------------------------------------------------------
    def default_state(self, batch: int) -> dict:
        """Zero state for `step`: per-layer SSM states, running feature sum, steps seen."""
        if self.spec.bidirectional:
            raise ConfigError("step mode: model.bidirectional is true, expected a unidirectional model")
        if self.spec.kind != "s4d":
            raise ConfigError(f"step mode: model.kind is {self.spec.kind!r}, expected s4d")
        p = self.decoder.weight
        return {"layers": [block.default_state(batch) for block in self.blocks],
                "sum": torch.zeros(batch, self.spec.d_model, dtype=p.dtype, device=p.device),  # (B H)
                "t": 0}

    def step(self, x_t: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """One time step: x_t (B,) tokens or (B d_input) floats -> logits (B d_output) for the prefix."""
        h = self.encoder(x_t)  # (B H)
        layers = []
        for block, s in zip(self.blocks, state["layers"]):
            h, s = block.step(h, s)  # (B H)
            layers.append(s)
        total = state["sum"] + h  # (B H)
        t = state["t"] + 1
        pooled = total / t if self.spec.pool == "mean" else h  # (B H)
        return self.decoder(pooled), {"layers": layers, "sum": total, "t": t}
