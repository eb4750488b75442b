"""One residual S4/S4D block on x (B H L).

  z = norm(x) if prenorm else x
  z = SSMConv(z)                        # K * z + D z per kept channel; bypass for pruned ones
  z = GLU(Linear(dropout(GELU(z))))     # Linear(H_out, 2H), H_out = H or H_kept (zero bypass);
                                        # its columns follow SSMConv.output_channels() (kept-first)
  x = x + z;  x = norm(x) if postnorm
"""

from __future__ import annotations

import torch
from torch import nn

from workers.models.layer import SSMConv
from workers.models.spec import ModelSpec


class ChannelNorm(nn.Module):
    """LayerNorm or BatchNorm over the H channels of x (B H L)."""

    def __init__(self, kind: str, H: int):
        super().__init__()
        self.kind = kind
        self.norm = nn.LayerNorm(H) if kind == "layer" else nn.BatchNorm1d(H)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "layer":
            return self.norm(x.transpose(1, 2)).transpose(1, 2)  # (B H L)
        return self.norm(x)  # (B H L)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """x (B H) at one time step; BatchNorm uses running statistics (eval mode)."""
        return self.norm(x)  # (B H)


class S4Block(nn.Module):
    def __init__(self, spec: ModelSpec, kept=None, bypass: str = "identity"):
        super().__init__()
        H = spec.d_model
        self.prenorm = spec.prenorm
        self.conv = SSMConv(spec, kept=kept, bypass=bypass)
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(spec.dropout)
        self.mix = nn.Linear(self.conv.out_channels, 2 * H)
        self.glu = nn.GLU(dim=1)
        self.norm = ChannelNorm(spec.norm, H)

    def _mix(self, y: torch.Tensor) -> torch.Tensor:
        """(B H_out L) -> (B H L): Linear to 2H over channels, then GLU.

        One batched matmul W y + b in the (B H L) layout (a 1x1 convolution): the output stays
        L-contiguous, so GLU, the residual and the norm never touch a transposed view.
        """
        W = self.mix.weight.expand(y.shape[0], -1, -1)  # (B 2H H_out)
        z = torch.baddbmm(self.mix.bias[:, None], W, y)  # (B 2H L)
        return self.glu(z)  # (B H L)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.norm(x) if self.prenorm else x  # (B H L)
        z = self.dropout(self.activation(self.conv(z)))  # (B H_out L)
        x = x + self._mix(z)  # (B H L)
        return x if self.prenorm else self.norm(x)  # (B H L)

    def default_state(self, batch: int) -> torch.Tensor:
        return self.conv.default_state(batch)

    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B H) one time step -> (B H); eval-mode semantics."""
        z = self.norm.step(x) if self.prenorm else x  # (B H)
        z, state = self.conv.step(z, state)  # (B H_out)
        z = self.glu(self.mix(self.dropout(self.activation(z))))  # (B H)
        x = x + z  # (B H)
        return (x if self.prenorm else self.norm.step(x)), state

    def compacted(self, spec: ModelSpec, kept: list[int], bypass: str) -> "S4Block":
        """A copy of this block whose SSMConv holds only `kept`; the mixing Linear's columns follow
        the new conv's output channels (kept-first for identity bypass, kept only for zero)."""
        import copy

        new = copy.deepcopy(self, memo={id(self.conv): None})  # the conv is rebuilt below, not copied
        new.conv = self.conv.compacted(spec, kept, bypass)
        old_out, new_out = self.conv.output_channels(), new.conv.output_channels()
        if new_out != old_out:
            position = {k: i for i, k in enumerate(old_out)}
            cols = torch.tensor([position[k] for k in new_out], dtype=torch.long, device=self.mix.weight.device)
            mix = nn.Linear(len(cols), self.mix.out_features).to(self.mix.weight.device, self.mix.weight.dtype)
            with torch.no_grad():
                mix.weight.copy_(self.mix.weight[:, cols])  # (2H H_out)
                mix.bias.copy_(self.mix.bias)
            mix.weight.requires_grad_(self.mix.weight.requires_grad)
            mix.bias.requires_grad_(self.mix.bias.requires_grad)
            new.mix = mix
        return new
