"""Training step time: our S4Model against a plain S4D model, side by side in one process.

The plain model is written here the way the minimal S4D of the S4 authors' repository reads
(`models/s4/s4d.py` + `example.py` of state-spaces/s4): every forward builds the kernel K from
log_dt, log_A_real, A_imag and C (Vandermonde of exp(dt A l)), convolves by FFT (length 2L), adds
D u, then GELU, Conv1d(H, 2H, 1) + GLU, the residual and BatchNorm (post-norm); mean pool over L,
linear decoder. Our model is `workers.models.S4Model` with the same sizes (BatchNorm, post-norm,
S4D-Lin, ZOH, mean pool) and the same parameter count (checked). One step = forward + backward +
AdamW step on a random token batch, as `workers.training.fit` makes it (`make_batch` checks the
tokens once; the model is called with `lengths`). Both models step alternately (interleaved
rounds, the order flipped every round), and the ratio of the medians is printed per shape and
thread count.

    .venv/bin/python benchmarks/bench_train_step.py                       # both shapes, 1 and 2 threads
    .venv/bin/python benchmarks/bench_train_step.py --shapes small --profile  # where our step's time goes
    .venv/bin/python benchmarks/bench_train_step.py --device cuda --precision bf16  # on a GPU (timed with
                                                                                    # CUDA synchronisation)
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.models import ModelSpec, S4Model  # noqa: E402
from workers.optim import build_optimizer  # noqa: E402
from workers.precision import PRECISIONS, autocast, grad_scaler  # noqa: E402

SHAPES = {  # name: (B, L, H, n_layers, N)
    "small": (16, 1024, 128, 4, 64),
    "large": (50, 2048, 128, 8, 64),
}
VOCAB, CLASSES = 16, 10


# ----------------------------------------------------------------------------- the plain S4D
class PlainS4DKernel(nn.Module):
    """K (H L) from log_dt (H), log_A_real, A_imag (H N/2), C (H N/2) complex; S4D-Lin, ZOH."""

    def __init__(self, H: int, N: int, dt_min: float = 0.001, dt_max: float = 0.1):
        super().__init__()
        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)  # (H)
        self.C = nn.Parameter(torch.view_as_real(torch.randn(H, N // 2, dtype=torch.cfloat)))  # (H N/2 2)
        self.log_dt = nn.Parameter(log_dt)
        self.log_A_real = nn.Parameter(torch.log(0.5 * torch.ones(H, N // 2)))  # (H N/2)
        self.A_imag = nn.Parameter(math.pi * torch.arange(N // 2).float().expand(H, -1).clone())  # (H N/2)
        for p in (self.log_dt, self.log_A_real, self.A_imag):
            p._optim = {"lr": 0.001, "weight_decay": 0.0}

    def forward(self, L: int) -> torch.Tensor:
        dt = torch.exp(self.log_dt)  # (H)
        C = torch.view_as_complex(self.C)  # (H N/2)
        A = -torch.exp(self.log_A_real) + 1j * self.A_imag  # (H N/2)
        dtA = A * dt[:, None]  # (H N/2)
        Z = dtA[:, :, None] * torch.arange(L, device=A.device)  # (H N/2 L)
        C = C * (torch.exp(dtA) - 1.0) / A  # (H N/2)
        return 2 * torch.einsum("hn,hnl->hl", C, torch.exp(Z)).real  # (H L)


class PlainS4D(nn.Module):
    """u (B H L) -> Conv1d+GLU(GELU(K * u + D u)) (B H L)."""

    def __init__(self, H: int, N: int):
        super().__init__()
        self.D = nn.Parameter(torch.randn(H))  # (H)
        self.kernel = PlainS4DKernel(H, N)
        self.activation = nn.GELU()
        self.output_linear = nn.Sequential(nn.Conv1d(H, 2 * H, kernel_size=1), nn.GLU(dim=-2))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        L = u.size(-1)
        k_f = torch.fft.rfft(self.kernel(L), n=2 * L)  # (H L+1)
        u_f = torch.fft.rfft(u, n=2 * L)  # (B H L+1)
        y = torch.fft.irfft(u_f * k_f, n=2 * L)[..., :L]  # (B H L)
        y = y + u * self.D[:, None]  # (B H L)
        return self.output_linear(self.activation(y))  # (B H L)


class PlainS4DModel(nn.Module):
    """Embedding -> n_layers x (x = BN(x + S4D(x))) -> mean over L -> Linear."""

    def __init__(self, H: int, n_layers: int, N: int):
        super().__init__()
        self.encoder = nn.Embedding(VOCAB, H, padding_idx=0)
        self.layers = nn.ModuleList(PlainS4D(H, N) for _ in range(n_layers))
        self.norms = nn.ModuleList(nn.BatchNorm1d(H) for _ in range(n_layers))
        self.decoder = nn.Linear(H, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.encoder(x).transpose(-1, -2)  # (B H L)
        for layer, norm in zip(self.layers, self.norms):
            x = norm(layer(x) + x)  # (B H L)
        return self.decoder(x.mean(dim=-1))  # (B CLASSES)


# ----------------------------------------------------------------------------- the step
def our_model(H: int, n_layers: int, N: int) -> S4Model:
    spec = ModelSpec(kind="s4d", d_input=VOCAB, d_output=CLASSES, input_kind="tokens", d_model=H,
                     n_layers=n_layers, d_state=N, norm="batch", prenorm=False, pool="mean", init="lin", disc="zoh")
    return S4Model(spec)


def make_step(model: nn.Module, ours: bool, x: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor,
              precision: str = "fp32"):
    """A closure running one forward + backward + AdamW step (the optimiser groups, autocast and
    grad scaler as in `fit`); on CUDA timed from a synchronised start to a synchronised end."""
    device = x.device
    model.to(device).train()
    optimizer = build_optimizer(model, 1e-3, 0.01)
    scaler = grad_scaler(device, precision)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step() -> float:
        sync()
        t0 = time.perf_counter()
        with autocast(device, precision):
            logits = model(x, lengths) if ours else model(x)  # (B CLASSES)
        loss = nn.functional.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        sync()
        return time.perf_counter() - t0

    return step


def measure(shape: str, threads: int, steps: int, warmup: int, device: str = "cpu", precision: str = "fp32") -> dict:
    torch.set_num_threads(threads)
    B, L, H, n_layers, N = SHAPES[shape]
    torch.manual_seed(0)
    ours, plain = our_model(H, n_layers, N), PlainS4DModel(H, n_layers, N)
    params = [sum(p.numel() for p in m.parameters()) for m in (ours, plain)]
    if params[0] != params[1]:
        raise SystemExit(f"parameter counts differ: ours {params[0]}, plain {params[1]}")
    x = torch.randint(1, VOCAB, (B, L), device=device)  # (B L)
    lengths = torch.full((B,), L, dtype=torch.long, device=device)  # (B)
    y = torch.randint(0, CLASSES, (B,), device=device)  # (B)
    steps_of = {"ours": make_step(ours, True, x, lengths, y, precision),
                "plain": make_step(plain, False, x, lengths, y, precision)}
    for _ in range(warmup):
        for run in steps_of.values():
            run()
    times: dict[str, list[float]] = {"ours": [], "plain": []}
    for r in range(steps):
        for name in (("ours", "plain") if r % 2 == 0 else ("plain", "ours")):
            times[name].append(steps_of[name]())
    med = {name: statistics.median(t) for name, t in times.items()}
    return {"shape": shape, "B": B, "L": L, "H": H, "n_layers": n_layers, "N": N, "threads": threads,
            "device": device, "precision": precision,
            "params": params[0], "steps": steps, "ours_ms": 1e3 * med["ours"], "plain_ms": 1e3 * med["plain"],
            "ratio": med["ours"] / med["plain"],
            "ours_min_ms": 1e3 * min(times["ours"]), "plain_min_ms": 1e3 * min(times["plain"])}


def profile(shape: str, threads: int) -> None:
    """Print the operators where our step's time goes (torch profiler, 3 steps after 1 warm-up)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    torch.set_num_threads(threads)
    B, L, H, n_layers, N = SHAPES[shape]
    torch.manual_seed(0)
    x, lengths, y = torch.randint(1, VOCAB, (B, L)), torch.full((B,), L), torch.randint(0, CLASSES, (B,))
    for name, model in (("ours", our_model(H, n_layers, N)), ("plain", PlainS4DModel(H, n_layers, N))):
        step = make_step(model, name == "ours", x, lengths, y)
        step()
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                step()
        print(f"--- {name} ({shape}, {threads} threads, 3 steps)")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="small,large", help="comma-separated: " + ", ".join(SHAPES))
    parser.add_argument("--threads", default="1,2", help="comma-separated intra-op thread counts")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per model (median; >= 8)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="autocast type of the step (both models)")
    parser.add_argument("--profile", action="store_true", help="print a profiler table instead of timing")
    args = parser.parse_args(argv)
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    bad = [s for s in shapes if s not in SHAPES]
    if bad:
        raise SystemExit(f"--shapes: got {', '.join(bad)}, expected some of {', '.join(SHAPES)}")
    threads = [int(t) for t in args.threads.split(",")]
    if args.profile:
        for shape in shapes:
            profile(shape, threads[0])
        return
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device: got {args.device!r} but torch {torch.__version__} has no CUDA here")
    if args.steps < 8:
        raise SystemExit(f"--steps: got {args.steps}, expected >= 8 (the median needs them)")
    where = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else "cpu"
    print(f"bench_train_step: {platform.machine()} ({torch.get_num_threads()} threads default), torch {torch.__version__}, "
          f"python {platform.python_version()}, {datetime.now(timezone.utc).isoformat(timespec='seconds')}, "
          f"device {args.device} ({where}), precision {args.precision}")
    print(f"{'shape':>6} {'B':>3} {'L':>5} {'H':>4} {'layers':>6} {'threads':>7} {'params':>9} "
          f"{'ours ms':>9} {'plain ms':>9} {'ratio':>6} {'min ratio':>9}")
    for shape in shapes:
        for t in threads:
            r = measure(shape, t, args.steps, args.warmup, args.device, args.precision)
            print(f"{shape:>6} {r['B']:>3} {r['L']:>5} {r['H']:>4} {r['n_layers']:>6} {t:>7} {r['params']:>9,} "
                  f"{r['ours_ms']:>9.1f} {r['plain_ms']:>9.1f} {r['ratio']:>6.3f} {r['ours_min_ms'] / r['plain_min_ms']:>9.3f}",
                  flush=True)
            print("json " + json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
