"""The S4 authors' model layout (state-spaces/s4 `example.py`) as state dicts, both ways.

Their classifier: `encoder` (Linear(d_input, H), or an Embedding(V, H) for tokens), n layers
`s4_layers.<i>` each a residual block with `norms.<i>` (LayerNorm or BatchNorm1d over H) and a
parameter-free dropout, post-norm unless built with prenorm, mean pooling over all positions and a
`decoder` Linear(H, d_output). The layers come in three layouts (N/2 = stored conjugate modes):

  s4d-minimal  (`models/s4/s4d.py` S4D, zoh, B = 1)
      D (H), kernel.log_dt (H), kernel.log_A_real (H N/2), kernel.A_imag (H N/2),
      kernel.C (H N/2 2), output_linear.0 = Conv1d(H, 2H, 1) (+ GLU over channels)
      A = -exp(log_A_real) + i A_imag
  s4block-diag (`models/s4/s4.py` S4Block, FFTConv mode diag = SSMKernelDiag)
      layer.D (1 H), layer.kernel.inv_dt (H 1), layer.kernel.A_real (S N/2),
      layer.kernel.A_imag (S N/2), layer.kernel.B (1 S N/2 2), layer.kernel.C (c H N/2 2),
      output_linear.0 = Linear(H, 2H) (+ GLU);  A = -exp(A_real) - i A_imag (the other sign),
      dt = exp(inv_dt), S = n_ssm copies of (A, B) tied across H (h uses row h mod S),
      c = 2 when bidirectional (forward kernel first)
  s4block-dplr (the same with FFTConv mode dplr = SSMKernelDPLR: A = diag(A) - P P^*, bilinear)
      + layer.kernel.P (1 S N/2 2), layer.kernel.l_kernel (); C holds C~ = C (I - dA^l_kernel)
      once the kernel has run (l_kernel > 0), the plain C while l_kernel = 0.

Assumed (not in a state dict, the authors' defaults): dt and A_real under exp, A_imag untransformed,
S4Block activation GELU, final_act glu, no gate/bottleneck, channels 1, rank 1; diag kernels zoh
unless `disc="bilinear"` is given.

`read_layout` checks every key and shape and says which key it does not understand;
`to_s4op` maps such a state dict onto an `S4Model`, `from_s4op` maps an (optionally pruned) S4Model
back onto the dense layout: a pruned operator gets C = 0 and D = 1 (identity bypass) or D = 0
(zero bypass), so K * u + D u is exactly its bypass.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import torch

from search_spaces.errors import CheckpointError, ConfigError
from workers.models.backbone import S4Model
from workers.models.spec import ModelSpec

LAYOUTS = ("s4d-minimal", "s4block-diag", "s4block-dplr")
LAYER_KEYS = {
    "s4d-minimal": ("D", "kernel.log_dt", "kernel.log_A_real", "kernel.A_imag", "kernel.C",
                    "output_linear.0.weight", "output_linear.0.bias"),
    "s4block-diag": ("layer.D", "layer.kernel.inv_dt", "layer.kernel.A_real", "layer.kernel.A_imag",
                     "layer.kernel.B", "layer.kernel.C", "output_linear.0.weight", "output_linear.0.bias"),
}
LAYER_KEYS["s4block-dplr"] = LAYER_KEYS["s4block-diag"] + ("layer.kernel.P", "layer.kernel.l_kernel")
NORM_KEYS = {"layer": ("weight", "bias"), "batch": ("weight", "bias", "running_mean", "running_var",
                                                   "num_batches_tracked")}


@dataclass
class Layout:
    """What a state dict of the authors' layout holds (and what we assumed about the rest)."""

    layer: str  # one of LAYOUTS
    n_layers: int
    H: int
    N: int
    n_ssm: int
    d_input: int
    d_output: int
    input_kind: str  # tokens (Embedding) | real (Linear)
    encoder_bias: bool
    norm: str  # layer | batch
    bidirectional: bool
    prenorm: bool
    disc: str  # zoh | bilinear (bilinear always for dplr)
    l_kernel: int = 0  # dplr: the length C~ was set up for (0: C is the plain C)

    def to_dict(self) -> dict:
        return asdict(self)

    def expected_keys(self) -> str:
        """The keys this layout holds, for error messages: one line with <i> for the layer index."""
        enc = "encoder.weight" + (", encoder.bias" if self.encoder_bias else "")
        layer = ", ".join(f"s4_layers.<i>.{k}" for k in LAYER_KEYS[self.layer])
        norms = ", ".join(f"norms.<i>.{k}" for k in NORM_KEYS[self.norm])
        return f"{enc}, {layer}, {norms}, decoder.weight, decoder.bias (i = 0..{self.n_layers - 1})"


def _fail(message: str) -> CheckpointError:
    return CheckpointError(message)


def unwrap(obj, source: str) -> dict[str, torch.Tensor]:
    """The state dict inside what torch.load returned: itself, or example.py's {'model': state_dict}."""
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        raise _fail(f"{source}: not a state dict of tensors (expected torch.save(model.state_dict()) or "
                    "example.py's {'model': state_dict, ...})")
    return obj


def _layer_kind(sd: dict, source: str) -> str:
    if "s4_layers.0.kernel.log_dt" in sd:
        return "s4d-minimal"
    if "s4_layers.0.layer.kernel.P" in sd:
        return "s4block-dplr"
    if "s4_layers.0.layer.kernel.inv_dt" in sd:
        return "s4block-diag"
    first = next((k for k in sd if k.startswith("s4_layers.0.")), next(iter(sd)))
    raise _fail(f"{source}: key {first!r} not understood; expected an example.py model whose s4_layers are "
                f"S4D (s4_layers.<i>.kernel.log_dt, ...) or S4Block (s4_layers.<i>.layer.kernel.inv_dt, ...)")


def _shape(sd: dict, key: str, expected: tuple, source: str) -> torch.Tensor:
    t = sd[key]
    if tuple(t.shape) != tuple(expected):
        raise _fail(f"{source}: {key} has shape {tuple(t.shape)}, expected {tuple(expected)}")
    return t


def read_layout(sd: dict, source: str, *, prenorm: bool = False, input_kind: str | None = None,
                disc: str = "zoh") -> Layout:
    """Infer the layout from the keys and shapes; every key must be understood and every shape fit."""
    layer = _layer_kind(sd, source)
    indices = sorted({int(m.group(1)) for k in sd if (m := re.match(r"s4_layers\.(\d+)\.", k))})
    if indices != list(range(len(indices))):
        raise _fail(f"{source}: s4_layers indices {indices} are not 0..{len(indices) - 1}")
    for key in ("encoder.weight", "decoder.weight", "decoder.bias", "norms.0.weight"):
        if key not in sd:
            raise _fail(f"{source}: key {key!r} missing; expected an example.py model (encoder, s4_layers, norms, decoder)")
    d_output, H = sd["decoder.weight"].shape
    enc = sd["encoder.weight"]
    bias = "encoder.bias" in sd
    kind = _encoder_kind(enc, bias, H, input_kind, source)
    d_input = enc.shape[1] if kind == "real" else enc.shape[0]
    p = f"s4_layers.0.{'kernel' if layer == 's4d-minimal' else 'layer.kernel'}."
    real_key = p + ("log_A_real" if layer == "s4d-minimal" else "A_real")
    real = sd[real_key]
    if real.dim() != 2 or real.shape[0] < 1 or H % real.shape[0]:
        raise _fail(f"{source}: {real_key} has shape {tuple(real.shape)}, expected (S N/2) with S dividing H={H}")
    n_ssm, half = real.shape
    channels = sd[p + "C"].shape[0] if layer != "s4d-minimal" and p + "C" in sd and sd[p + "C"].dim() else 1
    norm = "batch" if "norms.0.running_mean" in sd else "layer"
    if layer == "s4block-dplr":
        disc = "bilinear"
    elif disc not in ("zoh", "bilinear"):
        raise ConfigError(f"--disc: got {disc!r}, expected zoh or bilinear")
    if layer == "s4d-minimal" and disc != "zoh":
        raise ConfigError("--disc bilinear: the minimal S4D layer (kernel.log_dt) is always zoh")
    l_kernel = sd.get("s4_layers.0.layer.kernel.l_kernel", torch.tensor(0))
    l_kernel = int(l_kernel) if layer == "s4block-dplr" and l_kernel.numel() == 1 else 0
    out = Layout(layer, len(indices), int(H), 2 * int(half), int(n_ssm), int(d_input), int(d_output), kind, bias,
                 norm, channels == 2, bool(prenorm), disc, l_kernel)
    if channels not in (1, 2):
        raise _fail(f"{source}: {p}C has {channels} kernel channels, expected 1 or 2 (bidirectional)")
    _check_keys(sd, out, source)
    return out


def _encoder_kind(enc: torch.Tensor, bias: bool, H: int, input_kind: str | None, source: str) -> str:
    """tokens (Embedding (V H)) or real (Linear (H d_input)), from the shapes and the --input flag."""
    if input_kind not in (None, "tokens", "real"):
        raise ConfigError(f"--input: got {input_kind!r}, expected tokens or real")
    if enc.dim() != 2:
        raise _fail(f"{source}: encoder.weight has shape {tuple(enc.shape)}, expected (H d_input) or (V H)")
    could_real = enc.shape[0] == H
    could_tokens = enc.shape[1] == H and not bias
    if input_kind == "real" and not could_real or input_kind == "tokens" and not could_tokens:
        raise ConfigError(f"--input {input_kind}: encoder.weight {tuple(enc.shape)}"
                          f"{' with a bias' if bias else ''} cannot be "
                          f"{'a Linear(d_input, H=' + str(H) + ')' if input_kind == 'real' else 'an Embedding(V, H=' + str(H) + ') without bias'}")
    if input_kind is not None:
        return input_kind
    if could_real and could_tokens:
        raise ConfigError(f"{source}: encoder.weight {tuple(enc.shape)} without a bias could be a Linear({H}, {H}) "
                          f"or an Embedding({H}, {H}); pass --input real or --input tokens")
    if not (could_real or could_tokens):
        raise _fail(f"{source}: encoder.weight has shape {tuple(enc.shape)}, expected ({H} d_input) or (V {H})")
    return "real" if could_real else "tokens"


def _layer_shapes(lay: Layout) -> dict[str, tuple]:
    H, h2, S, c = lay.H, lay.N // 2, lay.n_ssm, 2 if lay.bidirectional else 1
    if lay.layer == "s4d-minimal":
        return {"D": (H,), "kernel.log_dt": (H,), "kernel.log_A_real": (H, h2), "kernel.A_imag": (H, h2),
                "kernel.C": (H, h2, 2), "output_linear.0.weight": (2 * H, H, 1), "output_linear.0.bias": (2 * H,)}
    shapes = {"layer.D": (1, H), "layer.kernel.inv_dt": (H, 1), "layer.kernel.A_real": (S, h2),
              "layer.kernel.A_imag": (S, h2), "layer.kernel.B": (1, S, h2, 2), "layer.kernel.C": (c, H, h2, 2),
              "output_linear.0.weight": (2 * H, H), "output_linear.0.bias": (2 * H,)}
    if lay.layer == "s4block-dplr":
        shapes.update({"layer.kernel.P": (1, S, h2, 2), "layer.kernel.l_kernel": ()})
    return shapes


def expected_shapes(lay: Layout) -> dict[str, tuple]:
    """Every key of the layout with its shape."""
    H = lay.H
    enc = (H, lay.d_input) if lay.input_kind == "real" else (lay.d_input, H)
    out = {"encoder.weight": enc, **({"encoder.bias": (H,)} if lay.encoder_bias else {})}
    norm = {"weight": (H,), "bias": (H,), "running_mean": (H,), "running_var": (H,), "num_batches_tracked": ()}
    for i in range(lay.n_layers):
        out.update({f"s4_layers.{i}.{k}": s for k, s in _layer_shapes(lay).items()})
        out.update({f"norms.{i}.{k}": norm[k] for k in NORM_KEYS[lay.norm]})
    out.update({"decoder.weight": (lay.d_output, H), "decoder.bias": (lay.d_output,)})
    return out


def _check_keys(sd: dict, lay: Layout, source: str) -> None:
    expected = expected_shapes(lay)
    for key in sd:
        if key not in expected:
            raise _fail(f"{source}: key {key!r} not understood; expected {lay.expected_keys()}")
    for key, shape in expected.items():
        if key not in sd:
            raise _fail(f"{source}: key {key!r} missing; expected {lay.expected_keys()}")
        _shape(sd, key, shape, source)
        if sd[key].is_floating_point() and not torch.isfinite(sd[key]).all():
            raise _fail(f"{source}: {key} holds non-finite values")
    if lay.layer == "s4block-dplr" and any(int(sd[f"s4_layers.{i}.layer.kernel.l_kernel"]) < 0
                                           for i in range(lay.n_layers)):
        raise _fail(f"{source}: a layer.kernel.l_kernel is negative")


# ---- state-spaces -> s4op -------------------------------------------------------------------------

def spec_of(lay: Layout) -> ModelSpec:
    """The s4op architecture that computes what the layout computes."""
    minimal = lay.layer == "s4d-minimal"
    return ModelSpec(kind="s4" if lay.layer == "s4block-dplr" else "s4d", d_input=lay.d_input,
                     d_output=lay.d_output, input_kind=lay.input_kind, d_model=lay.H, n_layers=lay.n_layers,
                     d_state=lay.N, dropout=0.0, norm=lay.norm, prenorm=lay.prenorm,
                     bidirectional=lay.bidirectional, pool="mean", init="legs" if lay.layer == "s4block-dplr" else "lin",
                     disc=lay.disc, trainable_B=not minimal)


def plain_C(C_tilde: torch.Tensor, kernel, l_kernel: int) -> torch.Tensor:
    """C from C~ = C (I - dA^l): solve over the full conjugate system in float64.  # (c H N/2 2)"""
    from workers.models.s4 import conj_full

    import copy

    if l_kernel == 0:
        return C_tilde
    k = copy.deepcopy(kernel).to(torch.float64)
    dA, _ = k.dense_discrete()  # (H N N)
    eye = torch.eye(dA.shape[-1], dtype=dA.dtype)
    M = eye - torch.linalg.matrix_power(dA, l_kernel)  # (H N N)
    Ct = conj_full(torch.view_as_complex(C_tilde.to(torch.float64).contiguous()))  # (c H N)
    C = torch.linalg.solve(M.transpose(-1, -2)[None], Ct[..., None])[..., 0]  # C M = C~ <=> M^T C^T = C~^T  # (c H N)
    return torch.view_as_real(C[..., : dA.shape[-1] // 2].contiguous()).to(C_tilde.dtype)  # (c H N/2 2)


def to_s4op(sd: dict, lay: Layout) -> S4Model:
    """An S4Model (dense, eval mode) holding the state dict's weights."""
    model = S4Model(spec_of(lay)).eval()
    ours = model.state_dict()
    f32 = lambda t: t.detach().to(torch.float32)  # noqa: E731
    new = {"encoder.weight": f32(sd["encoder.weight"]), "decoder.weight": f32(sd["decoder.weight"]),
           "decoder.bias": f32(sd["decoder.bias"])}
    if lay.input_kind == "real":
        new["encoder.bias"] = f32(sd["encoder.bias"]) if lay.encoder_bias else torch.zeros(lay.H)
    tie = torch.arange(lay.H) % lay.n_ssm  # (H) row of the tied (A, B) each channel uses
    for i in range(lay.n_layers):
        s, o = f"s4_layers.{i}.", f"blocks.{i}."
        for k in NORM_KEYS[lay.norm]:
            new[f"{o}norm.norm.{k}"] = sd[f"norms.{i}.{k}"].detach().clone() if k == "num_batches_tracked" \
                else f32(sd[f"norms.{i}.{k}"])
        w = sd[s + "output_linear.0.weight"]
        new[o + "mix.weight"] = f32(w[..., 0] if lay.layer == "s4d-minimal" else w)  # (2H H)
        new[o + "mix.bias"] = f32(sd[s + "output_linear.0.bias"])
        if lay.layer == "s4d-minimal":
            new[o + "conv.D"] = f32(sd[s + "D"])
            for k in ("log_dt", "log_A_real", "A_imag"):
                new[f"{o}conv.kernel.{k}"] = f32(sd[f"{s}kernel.{k}"])
            new[o + "conv.kernel.C"] = f32(sd[s + "kernel.C"])[None]  # (1 H N/2 2)
            continue
        p = s + "layer.kernel."
        new[o + "conv.D"] = f32(sd[s + "layer.D"][0])
        new[o + "conv.kernel.log_dt"] = f32(sd[p + "inv_dt"][:, 0])
        new[o + "conv.kernel.log_A_real"] = f32(sd[p + "A_real"])[tie]
        new[o + "conv.kernel.A_imag"] = -f32(sd[p + "A_imag"])[tie]  # their A = -exp(A_real) - i A_imag
        new[o + "conv.kernel.B"] = f32(sd[p + "B"][0])[tie]
        if lay.layer == "s4block-dplr":
            new[o + "conv.kernel.P"] = f32(sd[p + "P"])[:, tie]
            new[o + "conv.kernel.C"] = f32(sd[p + "C"])  # C~ for now, solved below
        else:
            new[o + "conv.kernel.C"] = f32(sd[p + "C"])
    for key, value in ours.items():
        new.setdefault(key, value)
    model.load_state_dict(new)
    if lay.layer == "s4block-dplr":
        with torch.no_grad():
            for i, block in enumerate(model.blocks):
                l_kernel = int(sd[f"s4_layers.{i}.layer.kernel.l_kernel"])
                block.conv.kernel.C.copy_(plain_C(block.conv.kernel.C.detach(), block.conv.kernel, l_kernel))
    return model.eval()


# ---- s4op -> state-spaces -------------------------------------------------------------------------

def layout_for(model: S4Model, recorded: dict | None) -> Layout:
    """The layout to write `model` in: the one it was imported from, else the closest for its spec.

    Refuses (ConfigError) what that layout cannot compute exactly.
    """
    spec = model.spec
    if recorded:
        lay = Layout(**recorded)
    else:
        if spec.kind == "s4":
            layer = "s4block-dplr"
        elif spec.disc == "zoh" and not spec.bidirectional:
            layer = "s4d-minimal"
        else:
            layer = "s4block-diag"
        lay = Layout(layer, spec.n_layers, spec.d_model, spec.d_state, spec.d_model, spec.d_input, spec.d_output,
                     spec.input_kind, spec.input_kind == "real", spec.norm, spec.bidirectional, spec.prenorm,
                     spec.disc, 0)
    why = None
    if spec.pool != "mean":
        why = f"model.pool is {spec.pool!r}; the layout pools by the mean over all positions"
    elif (spec.kind == "s4") != (lay.layer == "s4block-dplr"):
        why = f"a {spec.kind} model does not fit the {lay.layer} layer"
    elif lay.layer == "s4d-minimal" and (spec.bidirectional or spec.disc != "zoh"):
        why = "the minimal S4D layer is unidirectional and zoh only"
    elif (spec.d_model, spec.n_layers, spec.d_state, spec.d_input, spec.d_output) != \
            (lay.H, lay.n_layers, lay.N, lay.d_input, lay.d_output):
        why = "the model's sizes differ from the recorded layout"
    if why:
        raise ConfigError(f"--format state-spaces cannot express this model exactly: {why}")
    lay.n_ssm = lay.H  # fine-tuning unties (A, B): every channel gets its own row
    lay.l_kernel = 0  # C is written plain; their kernel sets C~ up on its first call
    lay.prenorm, lay.disc = spec.prenorm, spec.disc
    return lay


def _dense_rows(values: torch.Tensor, kept: list[int], H: int, fill, dim: int = 0) -> torch.Tensor:
    """Scatter a kept-channel tensor (H_kept on `dim`) to H rows; the others get `fill`."""
    shape = list(values.shape)
    shape[dim] = H
    out = torch.empty(shape, dtype=values.dtype)
    out.copy_(fill.expand(shape) if torch.is_tensor(fill) else torch.full(shape, float(fill), dtype=values.dtype))
    index = torch.tensor(kept, dtype=torch.long)
    out.index_copy_(dim, index, values.detach().cpu())
    return out


def from_s4op(model: S4Model, lay: Layout) -> dict[str, torch.Tensor]:
    """The (pruned) model as a dense state dict of `lay`: pruned operators C = 0, D = bypass."""
    H, h2 = lay.H, lay.N // 2
    sd = model.state_dict()
    f32 = lambda t: t.detach().cpu().to(torch.float32).clone()  # noqa: E731
    out = {"encoder.weight": f32(sd["encoder.weight"]), "decoder.weight": f32(sd["decoder.weight"]),
           "decoder.bias": f32(sd["decoder.bias"])}
    if lay.encoder_bias:
        out["encoder.bias"] = f32(sd["encoder.bias"])
    elif lay.input_kind == "real" and sd["encoder.bias"].abs().max() > 0:
        raise ConfigError("--format state-spaces cannot express this model exactly: its encoder has a bias, the "
                          "recorded layout's encoder has none")
    n = torch.arange(h2, dtype=torch.float32)
    for i, block in enumerate(model.blocks):
        conv, o, s = block.conv, f"blocks.{i}.", f"s4_layers.{i}."
        kept, k = conv.kept.tolist(), conv.kernel
        for name in NORM_KEYS[lay.norm]:
            out[f"norms.{i}.{name}"] = sd[f"{o}norm.norm.{name}"].detach().clone()
        cols = {c: j for j, c in enumerate(conv.output_channels())}
        W = torch.zeros(2 * H, H)  # (2H H) zero bypass: the pruned columns see 0 anyway
        for c, j in cols.items():
            W[:, c] = block.mix.weight.detach()[:, j]
        bypass = 1.0 if model.bypass == "identity" else 0.0
        D = _dense_rows(conv.D, kept, H, bypass)  # (H)
        C = _dense_rows(k.C, kept, H, 0.0, dim=1)  # (c H N/2 2); pruned: K = 0
        log_dt = _dense_rows(k.log_dt, kept, H, math.log(0.01))  # (H) any finite dt for a zero kernel
        log_A_real = _dense_rows(k.log_A_real, kept, H, math.log(0.5))  # (H N/2)
        A_imag = _dense_rows(k.A_imag, kept, H, math.pi * n)  # (H N/2)
        if lay.layer == "s4d-minimal":
            if k.B is not None:  # B only scales C in a zoh kernel: fold it in
                Cc = torch.view_as_complex(C.contiguous()) * _dense_rows(torch.view_as_complex(k.B.detach()), kept, H,
                                                                         torch.ones((), dtype=torch.cfloat))
                C = torch.view_as_real(Cc)
            out.update({s + "D": f32(D), s + "kernel.log_dt": f32(log_dt), s + "kernel.log_A_real": f32(log_A_real),
                        s + "kernel.A_imag": f32(A_imag), s + "kernel.C": f32(C[0]),
                        s + "output_linear.0.weight": W[..., None], s + "output_linear.0.bias": f32(block.mix.bias)})
            continue
        B = _dense_rows(k.B.detach() if k.B is not None else torch.view_as_real(k._B().to(torch.cfloat)), kept, H,
                        torch.tensor([1.0, 0.0]))  # (H N/2 2)
        p = s + "layer.kernel."
        out.update({s + "layer.D": f32(D)[None], p + "inv_dt": f32(log_dt)[:, None], p + "A_real": f32(log_A_real),
                    p + "A_imag": -f32(A_imag), p + "B": f32(B)[None], p + "C": f32(C),
                    s + "output_linear.0.weight": W, s + "output_linear.0.bias": f32(block.mix.bias)})
        if lay.layer == "s4block-dplr":
            out[p + "P"] = f32(_dense_rows(k.P.detach()[0], kept, H, 0.0))[None]  # (1 H N/2 2)
            out[p + "l_kernel"] = torch.tensor(0)
    return out
