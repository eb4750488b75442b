"""Deployable forms of a compacted S4/S4D model: kernel-cached convolution, or the S4D step model.

Convolution form (`deployable(model, L)`): every layer's kernel spectrum k_f = rfft(K, 2L) (H_kept L+1)
is computed once and stored as two real buffers (real and imaginary part), so the exported graph
holds no kernel generation and no complex parameters: y = irfft(rfft(u, 2L) k_f)[:L] + D u, with
the complex product written out on real tensors. torch.onnx turns rfft/irfft into ONNX `DFT`.

Step form (`streaming(model)`, unidirectional S4D only): the discrete system dA, dB, dC (H_kept N/2)
as real/imag buffers and one recurrent step on real tensors,
  x_k = dA x_{k-1} + dB u_k,   y_k = Re(sum_n dC_n x_k,n) + D u_k,
with the state carried as (B H_kept N/2 2) real pairs per layer.

Formats: safetensors (the deployable module's tensors + JSON metadata in the header), ONNX
(`torch.onnx.export`, dynamo exporter, checked with onnxruntime), TorchScript (`torch.jit.trace`).
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from search_spaces.errors import ConfigError
from workers.models.backbone import S4Model
from workers.pruning import compact, kept_channels

FORMATS = ("safetensors", "onnx", "torchscript")


# ---- convolution form ---------------------------------------------------------------------------

class FrozenSSMConv(nn.Module):
    """One layer's SSM operators frozen at a fixed length; subclasses give `ssm` on the held channels.

    With identity bypass the output keeps the original channel order: the input with the kept rows
    replaced (one scatter; ONNX `ScatterND`), where the eager layer outputs kept-first (a gather of
    the pruned rows and a concat, two copies of (B H L)); `Deployable` permutes the mixing layer's
    columns to match.
    """

    def _frozen(self, conv) -> None:
        self.channels, self.bypass = conv.channels, conv.bypass
        self.dense = len(conv.kept) == conv.channels
        self.register_buffer("kept", conv.kept.clone())  # (H_kept)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u (B H L) -> (B H L) (identity bypass, original channel order) or (B H_kept L) (zero bypass)."""
        if self.dense:
            return self.ssm(u)  # (B H L)
        y = self.ssm(u.index_select(1, self.kept))  # (B H_kept L)
        if self.bypass == "zero":
            return y
        if u.shape[0] == 1:  # scatter along the first axis: no transposes around ONNX's ScatterND
            return u.flatten(0, 1).index_copy(0, self.kept, y.flatten(0, 1))[None]  # (1 H L): pruned rows = u
        return u.index_copy(1, self.kept, y)  # (B H L): pruned rows = u

    def ssm(self, u_kept: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class CachedSSMConv(FrozenSSMConv):
    """One layer's SSM operators at a fixed length L with the kernel spectrum frozen (real buffers)."""

    def __init__(self, conv, L: int):
        super().__init__()
        with torch.no_grad():
            was = conv.training
            conv.eval()
            k_f = conv.kernel_fft(L).detach()  # (H_kept L+1) complex
            conv.train(was)
        self.L = L
        self._frozen(conv)
        self.register_buffer("k_real", k_f.real.contiguous())  # (H_kept L+1)
        self.register_buffer("k_imag", k_f.imag.contiguous())  # (H_kept L+1)
        self.register_buffer("D", conv.D.detach().clone())  # (H_kept)

    def ssm(self, u_kept: torch.Tensor) -> torch.Tensor:
        """K * u + D u on the held channels: u_kept (B H_kept L) -> (B H_kept L)."""
        L = u_kept.shape[-1]
        u_f = torch.view_as_real(torch.fft.rfft(u_kept, n=2 * L))  # (B H_kept L+1 2)
        ur, ui = u_f[..., 0], u_f[..., 1]  # (B H_kept L+1)
        yr = ur * self.k_real - ui * self.k_imag  # (B H_kept L+1)
        yi = ur * self.k_imag + ui * self.k_real  # (B H_kept L+1)
        y = torch.fft.irfft(torch.complex(yr, yi), n=2 * L)[..., :L]  # (B H_kept L)
        return y + self.D[:, None] * u_kept  # (B H_kept L)


class ScanSSMConv(FrozenSSMConv):
    """One layer's S4D operators at a fixed length L as a chunked scan: matmuls, no FFT.

    With chunks of T steps (C = ceil(L/T) chunks, u zero-padded on the right), a = dA, and the
    kernel K[l] = Re(sum_n dC_n dB_n a_n^l), for t = cT + j:
      y[t] = sum_{i<=j} W[i,j] u[cT+i]                  intra-chunk: U (C T) @ W (T T), W[i,j] = K[j-i] (+ D on i = j)
           + Re(sum_n dC_n a_n^(j+1) x_c,n)             carry: X (C N) @ Q (N T), Q[n,j] = dC_n a_n^(j+1)
    where x_c is the state after chunk c-1: e_c = U_c @ P, P[i,n] = a_n^(T-1-i) dB_n (chunk-local end
    states), and x_c = a^T x_{c-1} + e_{c-1}, x_0 = 0, one step per chunk on (B H_kept 1 2 N/2) complex
    states held as real over imaginary part. Cost per channel ~ L (T + 2N) real multiply-adds in
    three batched matmuls, plus C - 2 small state updates; D u is folded into W's diagonal. All
    constants are precomputed in float64 and stored as float32 real buffers. Unidirectional S4D
    only (the kernel must have `discrete()`).

    This form is shaped for ONNX Runtime (`benchmarks/RESULTS.md`, issue 18): a sequential state
    update of C - 2 steps on (B H N/2) tensors costs less there than a log2(C)-step doubling scan over
    (B H N/2 C) tensors, whose per-mode multipliers ORT broadcasts slowly. Each update is 5 nodes
    (a^T x = A1 x + A2 flip(x), the flip swapping the real and imaginary parts, then + e): the
    chunk-local states are cut by one Split and the states joined by one Concat at the end, never
    gathered or stacked per step. A layer holding few channels is all per-node overhead, so it takes
    longer chunks (`chunk_length`).
    """

    def __init__(self, conv, L: int, T: int | None = None):
        super().__init__()
        kernel = conv.kernel
        if not hasattr(kernel, "discrete") or getattr(kernel, "bidirectional", False):
            raise ConfigError("export form 'scan': expected a unidirectional S4D model (use form 'fft')")
        T = max(1, min(T or chunk_length(len(conv.kept)), L))
        C = -(-L // T)
        with torch.no_grad():
            dA, dB, dC = copy.deepcopy(kernel).double().discrete()  # (H_kept N/2) complex128 each
            i = torch.arange(T, dtype=torch.float64)  # (T)
            powers = dA[..., None] ** i  # (H_kept N/2 T): a^l, l = 0..T-1
            K = torch.einsum("hn,hnl->hl", dC * dB, powers).real  # (H_kept T)
            lag = i[None, :] - i[:, None]  # (T T): j - i
            W = torch.where(lag >= 0, K[:, lag.clamp(min=0).long()], torch.zeros((), dtype=K.dtype))  # (H_kept T T)
            W = W + torch.diag_embed(conv.D.detach().double()[:, None].expand(-1, T))  # (H_kept T T): + D u
            P = (powers.flip(-1) * dB[..., None]).transpose(1, 2)  # (H_kept T N/2): a^(T-1-i) dB
            Q = dC[..., None] * powers * dA[..., None]  # (H_kept N/2 T): dC a^(j+1)
            A_T = dA ** T  # (H_kept N/2)
        self.L, self.T, self.C = L, T, C
        self._frozen(conv)
        self.register_buffer("W", W.float().contiguous())  # (H_kept T T)
        self.register_buffer("P", torch.cat([P.real, P.imag], -1).float().contiguous())  # (H_kept T N)
        self.register_buffer("Q", torch.cat([Q.real, -Q.imag], 1).float().contiguous())  # (H_kept N T)
        self.register_buffer("A1", torch.stack([A_T.real, A_T.real], 1)[:, None].float().contiguous())  # (H_kept 1 2 N/2)
        self.register_buffer("A2", torch.stack([-A_T.imag, A_T.imag], 1)[:, None].float().contiguous())  # (H_kept 1 2 N/2)

    def ssm(self, u_kept: torch.Tensor) -> torch.Tensor:
        """K * u + D u on the held channels: u_kept (B H_kept L) -> (B H_kept L)."""
        B, L, T, C = u_kept.shape[0], u_kept.shape[-1], self.T, self.C
        if C * T != L:
            u_kept = nn.functional.pad(u_kept, (0, C * T - L))  # (B H_kept C*T)
        U = u_kept.reshape(B, -1, C, T)  # (B H_kept C T)
        y = U @ self.W  # (B H_kept C T) intra-chunk, D u included
        E = U @ self.P  # (B H_kept C N) chunk-local end states, real | imaginary
        X = self._carry(E) if C > 1 else torch.zeros_like(E)  # (B H_kept C N)
        y = (y + X @ self.Q).reshape(B, -1, C * T)  # (B H_kept C*T)
        return y[..., :L] if C * T != L else y  # (B H_kept L)

    def _carry(self, E: torch.Tensor) -> torch.Tensor:
        """States before each chunk, x_0 = 0, x_{c+1} = a^T x_c + e_c: E (B H_kept C N) -> (B H_kept C N)."""
        B, n = E.shape[0], E.shape[-1] // 2  # N/2
        e = E.reshape(B, -1, self.C, 2, n).split(1, 2)  # C x (B H_kept 1 2 N/2): real over imaginary
        x = e[0]  # (B H_kept 1 2 N/2) state before chunk 1
        states = [torch.zeros_like(x), x]
        for c in range(1, self.C - 1):
            x = self.A1 * x + self.A2 * x.flip(3) + e[c]  # (B H_kept 1 2 N/2): a^T x + e
            states.append(x)
        return torch.cat(states, 2).reshape(B, -1, self.C, 2 * n)  # (B H_kept C N)

def chunk_length(kept: int) -> int:
    """The scan form's chunk length T for a layer holding `kept` channels: 256 for one, 128 for 2-4, else 64.

    Per layer the matmuls cost ~ kept L (T + 2N) and the carry C - 2 steps of 5 small nodes, so a
    layer holding few channels is all per-node overhead. One layer in ONNX Runtime (L 2048, N 64,
    1 thread, wall p50 ms at T 64 / 128 / 256, one interleaved run, 2026-12-03): 1 channel 0.148 /
    0.102 / 0.099, 2 channels 0.146 / 0.124 / 0.165, 4 channels 0.179 / 0.169 / 0.264, 8 channels
    0.231 / 0.255 / 0.461, 16 channels 0.340 / 0.431 / 0.852, 128 channels 1.91 / 3.14 / 6.05.
    """
    return 256 if kept <= 1 else 128 if kept <= 4 else 64


FORMS = ("auto", "fft", "scan")
CHANNEL_ORDER = "original"  # the frozen layers' output order with identity bypass (`FrozenSSMConv`)


def resolve_form(model: S4Model, form: str) -> str:
    """"auto": "scan" for unidirectional S4D (fewer operations, no DFT), else "fft"."""
    if form not in FORMS:
        raise ConfigError(f"export form: got {form!r}, expected one of {', '.join(FORMS)}")
    if form != "auto":
        return form
    return "scan" if model.spec.kind == "s4d" and not model.spec.bidirectional else "fft"


class Deployable(nn.Module):
    """forward(x) -> logits (B d_output) for x (B L) tokens or (B L d_input) floats at the fixed L."""

    def __init__(self, model: S4Model, L: int, form: str = "fft"):
        super().__init__()
        model = _plain(model)
        self.model = copy.deepcopy(model).eval()
        self.length = L
        self.form = resolve_form(model, form)
        for block in self.model.blocks:
            if block.conv.bypass == "identity" and len(block.conv.kept) < block.conv.channels:
                with torch.no_grad():  # the frozen layer outputs the original order, the eager one kept-first
                    block.mix.weight.copy_(block.mix.weight[:, torch.argsort(block.conv.order)])  # (2H H)
            block.conv = CachedSSMConv(block.conv, L) if self.form == "fft" else ScanSSMConv(block.conv, L)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder -> blocks -> pool over all L positions -> decoder (S4Model.forward, lengths None,
        without its input validation, whose data-dependent checks cannot be exported)."""
        h = self.model.encoder(x).transpose(1, 2).contiguous()  # (B H L)
        for block in self.model.blocks:
            h = self._block(block, h)  # (B H L)
        pooled = h.mean(-1) if self.model.spec.pool == "mean" else h[..., -1]  # (B H)
        return self.model.decoder(pooled)  # (B d_output)


    @staticmethod
    def _block(block, h: torch.Tensor) -> torch.Tensor:
        """`S4Block.forward` in eval mode, its mixing layer written for ONNX Runtime at batch 1: the GLU's
        two halves as two Gemms with the bias folded in (no Split of a (B 2H L) tensor, no bias pass)."""
        if h.shape[0] != 1:
            return block(h)  # (B H L)
        z = block.norm(h) if block.prenorm else h  # (B H L)
        z = block.activation(block.conv(z))[0]  # (H_out L)
        W, b = block.mix.weight, block.mix.bias  # (2H H_out), (2H)
        H = W.shape[0] // 2
        a = torch.addmm(b[:H, None], W[:H], z)  # (H L)
        g = torch.addmm(b[H:, None], W[H:], z)  # (H L)
        h = h + (a * torch.sigmoid(g))[None]  # (1 H L)
        return h if block.prenorm else block.norm(h)  # (1 H L)


def _plain(model: S4Model) -> S4Model:
    """The model with any mask applied by compaction (a masked reference becomes compact)."""
    if any(block.conv.mask is not None for block in model.blocks):
        model = compact(model, kept_channels(model))
    return model.eval()


def deployable(model: S4Model, L: int, form: str = "fft") -> Deployable:
    """The kernel-cached convolution form of `model` for sequences of length L ("fft" | "scan" | "auto")."""
    if isinstance(L, bool) or not isinstance(L, int) or L < 1:
        raise ConfigError(f"export length: got {L!r}, expected a positive integer")
    return Deployable(model, L, form).eval()


# ---- step (recurrent) form ----------------------------------------------------------------------

class StreamingSSM(nn.Module):
    """One layer's S4D operators in recurrent form on real tensors; state (B H_kept N/2 2)."""

    def __init__(self, conv):
        super().__init__()
        kernel = conv.kernel
        if not hasattr(kernel, "discrete") or getattr(kernel, "bidirectional", False):
            raise ConfigError("export --streaming: expected a unidirectional S4D model (got a bidirectional or S4 layer)")
        with torch.no_grad():
            dA, dB, dC = kernel.discrete()  # (H_kept N/2) each
        self.channels = conv.channels
        self.bypass = conv.bypass
        self.dense = len(conv.kept) == conv.channels
        self.register_buffer("kept", conv.kept.clone())  # (H_kept)
        self.register_buffer("pruned", conv.pruned.clone())  # (H - H_kept), output after the kept rows
        for name, value in (("dA", dA), ("dB", dB), ("dC", dC)):
            self.register_buffer(f"{name}_real", value.real.float().contiguous())  # (H_kept N/2)
            self.register_buffer(f"{name}_imag", value.imag.float().contiguous())  # (H_kept N/2)
        self.register_buffer("D", conv.D.detach().float().clone())  # (H_kept)

    def state_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, *self.dA_real.shape, 2)

    def forward(self, u: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u (B H) one step, state (B H_kept N/2 2) -> (y (B H) or (B H_kept), new state)."""
        u_kept = u if self.dense else u.index_select(1, self.kept)  # (B H_kept)
        sr, si = state[..., 0], state[..., 1]  # (B H_kept N/2)
        ar, ai = self.dA_real, self.dA_imag  # (H_kept N/2)
        nr = ar * sr - ai * si + self.dB_real * u_kept[..., None]  # (B H_kept N/2)
        ni = ar * si + ai * sr + self.dB_imag * u_kept[..., None]  # (B H_kept N/2)
        y = (self.dC_real * nr - self.dC_imag * ni).sum(-1) + self.D * u_kept  # (B H_kept)
        new_state = torch.stack([nr, ni], dim=-1)  # (B H_kept N/2 2)
        if self.bypass == "zero" or self.dense:
            return y, new_state
        return torch.cat([y, u.index_select(1, self.pruned)], dim=1), new_state  # (B H) kept-first


class Streaming(nn.Module):
    """One time step of the whole classifier: (x_t, states..., total, t) -> (logits, states..., total, t).

    x_t (B,) int64 tokens or (B d_input) floats; one state per layer (B H_kept N/2 2); total (B H)
    the running sum of the last block's outputs (for mean pooling); t (1,) float steps seen.
    """

    def __init__(self, model: S4Model):
        super().__init__()
        model = _plain(model)
        if model.spec.kind != "s4d" or model.spec.bidirectional:
            raise ConfigError(f"export --streaming: model is {model.spec.kind} with bidirectional="
                              f"{model.spec.bidirectional}, expected a unidirectional s4d model")
        self.model = copy.deepcopy(model).eval()
        self.ssm = nn.ModuleList(StreamingSSM(block.conv) for block in self.model.blocks)
        self.pool = model.spec.pool

    def initial_state(self, batch: int) -> tuple[torch.Tensor, ...]:
        dtype = self.model.decoder.weight.dtype
        states = [torch.zeros(s.state_shape(batch), dtype=dtype) for s in self.ssm]
        total = torch.zeros(batch, self.model.spec.d_model, dtype=dtype)  # (B H)
        return (*states, total, torch.zeros(1, dtype=dtype))

    def forward(self, x_t: torch.Tensor, *state: torch.Tensor):
        *layer_states, total, t = state
        h = self.model.encoder(x_t)  # (B H)
        new_states = []
        for block, ssm, s in zip(self.model.blocks, self.ssm, layer_states):
            z = block.norm.step(h) if block.prenorm else h  # (B H)
            z, s = ssm(z, s)  # (B H_out)
            z = block.glu(block.mix(block.activation(z)))  # (B H)
            h = h + z  # (B H)
            h = h if block.prenorm else block.norm.step(h)  # (B H)
            new_states.append(s)
        total = total + h  # (B H)
        t = t + 1.0  # (1)
        pooled = total / t if self.pool == "mean" else h  # (B H)
        return (self.model.decoder(pooled), *new_states, total, t)


def streaming(model: S4Model) -> Streaming:
    """The step (recurrent) form of a unidirectional S4D model."""
    return Streaming(model).eval()


# ---- examples, writing, checking, timing ---------------------------------------------------------

def example_input(model: S4Model, batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """A deterministic input: (B L) tokens in 1..d_input-1 or (B L d_input) standard normal floats."""
    g = torch.Generator().manual_seed(seed)
    spec = model.spec
    if spec.input_kind == "tokens":
        return torch.randint(1, max(spec.d_input, 2), (batch, length), generator=g)  # (B L)
    return torch.randn(batch, length, spec.d_input, generator=g)  # (B L d_input)


def module_inputs(module: nn.Module, model: S4Model, batch: int, length: int) -> tuple[torch.Tensor, ...]:
    """The example inputs of the exported module: (x,) or (x_t, *initial state)."""
    x = example_input(model, batch, length)
    if isinstance(module, Streaming):
        return (x[:, 0], *module.initial_state(batch))
    return (x,)


def describe(model: S4Model, module: nn.Module) -> dict:
    """What a loader needs to rebuild `module`: spec, kept, bypass, length, streaming, input/output names."""
    model = _plain(model)
    return {"spec": model.spec.to_dict(), "kept": kept_channels(model), "bypass": model.bypass,
            "streaming": isinstance(module, Streaming),
            "length": None if isinstance(module, Streaming) else module.length,
            "form": "step" if isinstance(module, Streaming) else module.form,
            "channel_order": None if isinstance(module, Streaming) else CHANNEL_ORDER,
            "inputs": input_names(module), "outputs": output_names(module)}


def input_names(module: nn.Module) -> list[str]:
    if isinstance(module, Streaming):
        return ["x_t", *[f"state_{i}" for i in range(len(module.ssm))], "total", "t"]
    return ["x"]


def output_names(module: nn.Module) -> list[str]:
    if isinstance(module, Streaming):
        return ["logits", *[f"new_state_{i}" for i in range(len(module.ssm))], "new_total", "new_t"]
    return ["logits"]


def write_export(module: nn.Module, inputs: tuple[torch.Tensor, ...], fmt: str, out: str | Path,
                 metadata: dict) -> Path:
    """Write `module` in format `fmt` to `out` (a file); `metadata` goes into the file where it can."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if fmt == "safetensors":
        from safetensors.torch import save_file

        tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        save_file(tensors, str(tmp), metadata={"s4op": json.dumps(metadata, sort_keys=True)})
    elif fmt == "onnx":
        import logging
        import warnings

        logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)  # torchvision notes
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, inputs, dynamo=True, input_names=input_names(module),
                                        output_names=output_names(module), verbose=False)
        program.save(str(tmp))
        import onnx

        proto = onnx.load(str(tmp))
        entry = proto.metadata_props.add()
        entry.key, entry.value = "s4op", json.dumps(metadata, sort_keys=True)
        onnx.save(proto, str(tmp))
    elif fmt == "torchscript":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(module, inputs, check_trace=False)
        torch.jit.save(traced, str(tmp), _extra_files={"s4op.json": json.dumps(metadata, sort_keys=True)})
    else:
        raise ConfigError(f"export --format: got {fmt!r}, expected one of {', '.join(FORMATS)}")
    tmp.replace(out)
    return out


def onnx_session(path: str | Path, threads: int = 1):
    """An ONNX Runtime CPU session on `path` with fixed threads: `threads` intra-op, 1 inter-op,
    sequential execution (the latency protocol's "threads fixed"), every graph optimisation on."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_exported(path: str | Path, fmt: str, module: nn.Module, inputs: tuple[torch.Tensor, ...],
                 threads: int = 1):
    """A callable running the exported file on `inputs` (numpy outputs), for checks and timing."""
    if fmt == "onnx":
        session = onnx_session(path, threads)
        feed = {arg.name: t.numpy() for arg, t in zip(session.get_inputs(), inputs)}
        return lambda: session.run(None, feed)
    if fmt == "torchscript":
        loaded = torch.jit.load(str(path))

        def call():
            with torch.inference_mode():
                out = loaded(*inputs)
            return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]
        return call
    if fmt == "safetensors":
        fresh = load_safetensors_export(path)

        def call():
            with torch.inference_mode():
                out = fresh(*inputs)
            return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]
        return call
    raise ConfigError(f"export --format: got {fmt!r}, expected one of {', '.join(FORMATS)}")


def load_safetensors_export(path: str | Path) -> nn.Module:
    """Rebuild a safetensors export (conv or step form) from its header metadata and tensors.

    The header's `s4op` JSON holds spec, kept, bypass, length and streaming; the module is built
    from a fresh model of that architecture and then filled from the file (nothing unpickled).
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    from workers.models.spec import ModelSpec

    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata() or {}
    if "s4op" not in header:
        raise ConfigError(f"{path}: no s4op metadata in the safetensors header; expected a file from `s4op export`")
    meta = json.loads(header["s4op"])
    model = S4Model(ModelSpec.from_dict(meta["spec"]), kept=meta["kept"], bypass=meta["bypass"]).eval()
    if not meta.get("streaming") and meta.get("channel_order") != CHANNEL_ORDER:
        raise ConfigError(f"{path}: written by an older s4op (its layers' buffers and channel order differ from "
                          f"this version's); export the model again with `s4op export`")
    module = streaming(model) if meta.get("streaming") else deployable(model, int(meta["length"]),
                                                                         meta.get("form", "fft"))
    module.load_state_dict(load_file(str(path)))
    return module.eval()


def time_callable(fn, *, repeats: int = 30, warmup: int = 5) -> dict:
    """The latency protocol for any callable: `warmup` untimed calls, `repeats` timed; ms figures."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    ordered = sorted(times)
    pos = (len(ordered) - 1) * 0.9
    lo = int(pos)
    p90 = ordered[lo] + (ordered[min(lo + 1, len(ordered) - 1)] - ordered[lo]) * (pos - lo)
    return {"p50_ms": statistics.median(times), "p90_ms": p90, "mean_ms": statistics.fmean(times),
            "repeats": repeats}


def max_abs_diff(path: str | Path, fmt: str, model: S4Model, module: nn.Module,
                 inputs: tuple[torch.Tensor, ...], *, steps: int = 8) -> float:
    """Largest |exported - eager PyTorch| over the logits.

    Convolution form: the exported file on `inputs` vs `model(x)` (the eager, FFT-cached model).
    Streaming form: the exported step run `steps` times from the zero state, feeding its own state
    back, vs `S4Model.step` (complex recurrence) on the same prefix, compared at every step.
    """
    model = _plain(model)
    if not isinstance(module, Streaming):
        with torch.inference_mode():
            expected = model(inputs[0]).numpy()  # (B d_output)
        got = run_exported(path, fmt, module, inputs)()[0]
        return float(np.abs(np.asarray(got) - expected).max())
    batch = inputs[0].shape[0]
    x = example_input(model, batch, steps, seed=1)  # (B T) or (B T d_input)
    state = model.default_state(batch)
    current = tuple(inputs[1:])
    worst = 0.0
    for t in range(steps):
        step_inputs = (x[:, t], *current)
        outputs = run_exported(path, fmt, module, step_inputs)()
        with torch.inference_mode():
            expected, state = model.step(x[:, t], state)  # (B d_output)
        worst = max(worst, float(np.abs(np.asarray(outputs[0]) - expected.numpy()).max()))
        current = tuple(torch.from_numpy(np.asarray(o)) for o in outputs[1:])
    return worst
