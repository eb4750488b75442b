"""Per-layer allocation: how many of a layer's H channels (SSM operators) are pruned at a rate.

Every policy returns `pruned[i]`, the number of channels of layer i (i = 0 is nearest the input)
that are pruned at rate r, counted against the original H channels; a search prunes
`pruned[i] - already_pruned[i]` more channels when it moves from one rate to the next.

- depth-aware (the paper's Algorithm 1, as the S4oP reference computes it, made monotone in the rate;
  see `depth_aware` for exactly where the two differ): a target of
  T = round(r * H * n) channels; layers 1..n-1 get weights base^i, normalised over the layers
  still open; each pass gives layer i round(w_i * remaining); a layer that would reach H - 1 is
  capped at H - 1 and leaves the pool; passes repeat on what is left. Layer 0 joins only once all
  deeper layers are saturated. Every layer keeps at least one channel, so at most n * (H - 1) can
  be pruned: `allocate_report(...).reached` says what was reached when T is beyond that. A
  single-layer model is pruned (its only layer is layer 0); the reference never prunes one.
- uniform: round(r * H) in every layer (capped at H - 1).
- random: T channels placed at random over all n * H slots by walking one seeded permutation
  and skipping layers already at H - 1 (so a higher rate only adds channels).
- layer-wise: one layer (`layer=`) fully deactivated (all H pruned; the rate is ignored): the
  ablation of Table I, the only policy that may empty a layer.

Each policy is a function registered in `policies.ALLOCATION` under its config name
(`search.allocation.policy`); `allocate` looks the name up.
"""

from __future__ import annotations

import random as _random
from dataclasses import dataclass

from search_spaces.errors import ConfigError
from search_spaces.policies import ALLOCATION

MONOTONE_SWEEP_LIMIT = 1 << 14  # largest n * H for which depth-aware is made monotone
_TABLES: dict[tuple[int, int, float], list[tuple[int, ...]]] = {}  # (n, H, base) -> counts per T


@dataclass(frozen=True)
class Allocation:
    """The pruned count per layer, the target T = round(r * H * n) and the total reached."""

    pruned: list[int]
    target: int
    reached: int

    @property
    def unreachable(self) -> bool:
        """True when the target asked for more than every layer keeping one channel allows."""
        return self.reached < self.target


def allocate(policy: str, rate: float, n_layers: int, channels: int, *, base: float = 2.0,
             seed: int | None = None, layer: int | None = None) -> list[int]:
    """Pruned channel count per layer at `rate` (see the module docstring for the policies)."""
    return allocate_report(policy, rate, n_layers, channels, base=base, seed=seed, layer=layer).pruned


def allocate_report(policy: str, rate: float, n_layers: int, channels: int, *, base: float = 2.0,
                    seed: int | None = None, layer: int | None = None) -> Allocation:
    """Like `allocate`, with the target and the total actually reached."""
    fn = ALLOCATION.get(policy)
    _check(rate, n_layers, channels, base)
    return fn(rate, n_layers, channels, base=base, seed=seed, layer=layer)


def unreachable_rate(rates, n_layers: int, channels: int, policy: str = "depth-aware") -> str | None:
    """Why the first of `rates` that no policy can reach is refused, or None.

    Every layer keeps one channel (all but `layer-wise`), so at most n * (H - 1) of the n * H
    channels can be pruned; a rate whose target T = round(r * H * n) is beyond that would be
    clamped, and the ledger would name a rate the model does not have.
    """
    if policy == "layer-wise":
        return None
    most = n_layers * (channels - 1)
    for i, rate in enumerate(rates):
        target = _target(float(rate), n_layers, channels)
        if target > most:
            return (f"search.rates[{i}]={float(rate):g} cannot be reached on {n_layers} layers x {channels} "
                    f"channels: every layer keeps one channel, so at most {most} of {n_layers * channels} "
                    f"({most / (n_layers * channels):.1%}) can be pruned, and this rate asks for {target}; "
                    f"use a rate of at most {_highest_rate(n_layers, channels):g}")
    return None


def _highest_rate(n_layers: int, channels: int) -> float:
    """The highest rate with 3 decimals whose target every-layer-keeps-one allows."""
    total, most = n_layers * channels, n_layers * (channels - 1)
    rate = int((most + 0.5) / total * 1000) / 1000  # round(r * total) <= most  <=>  r * total < most + 0.5
    while _target(rate, n_layers, channels) > most:
        rate = round(rate - 0.001, 3)
    return rate


def _target(rate: float, n_layers: int, channels: int) -> int:
    """T = round(r * H * n), the channels the rate asks for over all layers."""
    return int(round(rate * channels * n_layers))


def _report(pruned: list[int], target: int) -> Allocation:
    return Allocation(pruned=pruned, target=target, reached=sum(pruned))


@ALLOCATION.register("depth-aware")
def depth_aware_policy(rate: float, n_layers: int, channels: int, *, base: float = 2.0,
                       seed: int | None = None, layer: int | None = None) -> Allocation:
    """Algorithm 1 (made monotone): deeper layers lose more, weights base^i."""
    target = _target(rate, n_layers, channels)
    return _report(depth_aware(target, n_layers, channels, base=base), target)


@ALLOCATION.register("uniform")
def uniform_policy(rate: float, n_layers: int, channels: int, *, base: float = 2.0,
                   seed: int | None = None, layer: int | None = None) -> Allocation:
    """round(r * H) in every layer, capped at H - 1."""
    return _report([min(int(round(rate * channels)), channels - 1)] * n_layers, _target(rate, n_layers, channels))


@ALLOCATION.register("random")
def random_policy(rate: float, n_layers: int, channels: int, *, base: float = 2.0,
                  seed: int | None = None, layer: int | None = None) -> Allocation:
    """T channels placed by one seeded permutation of the n * H slots (seed None is seed 0)."""
    target = _target(rate, n_layers, channels)
    return _report(random_placement(target, n_layers, channels, seed=0 if seed is None else seed), target)


@ALLOCATION.register("layer-wise")
def layer_wise_policy(rate: float, n_layers: int, channels: int, *, base: float = 2.0,
                      seed: int | None = None, layer: int | None = None) -> Allocation:
    """Every channel of layer `layer` pruned, the rate ignored (Table I's ablation)."""
    if layer is None or isinstance(layer, bool) or not 0 <= int(layer) < n_layers:
        raise ConfigError(f"allocation layer={layer!r} must name a layer in 0..{n_layers - 1} "
                          f"for policy layer-wise")
    pruned = [0] * n_layers
    pruned[int(layer)] = channels
    return _report(pruned, channels)


def depth_aware(target: int, n_layers: int, channels: int, *, base: float = 2.0) -> list[int]:
    """Algorithm 1, made monotone in the target so that incremental stages nest.

    Returns pruned[i] <= H - 1 for every layer, summing to min(target, n * (H - 1)), and never
    smaller in any layer than for a lower target. Algorithm 1's own passes are not monotone in T
    for some shapes with n >= 6 layers (e.g. n = 6, H = 7, T = 21 -> 22 moves a channel from layer
    2 back to layer 1); there T gets T - 1's counts plus one channel in the layer Algorithm 1
    favours most, and the counts can stay off Algorithm 1's for a few more targets, until its
    counts are again >= ours in every layer. Where the two differ, the totals are equal, layer 0
    and the saturated layers agree, and one channel (rarely two) sits in a different layer among
    layers 1-4. Measured over n = 1..8, H = 8..256 and rates 0.01..0.99 (step 0.01): 175 of the
    197,208 (n, H, rate) points differ, all with n >= 6, none at the paper's rates 10/30/50/70/90 %
    with H = 64, 128 or 256; e.g. n = 8, H = 100, rate 0.49 (T = 392): ours [0, 7, 12, 24, 52, 99,
    99, 99], Algorithm 1 [0, 6, 12, 25, 52, 99, 99, 99]. `algorithm1` gives the reference's counts.
    A single-layer model (n = 1) is pruned here (layer 0 is the only layer); the reference never
    prunes it. Shapes with n * H > `MONOTONE_SWEEP_LIMIT` use Algorithm 1 as is.
    """
    cap = channels - 1
    target = max(0, min(int(target), n_layers * cap))
    if n_layers * channels > MONOTONE_SWEEP_LIMIT:
        return algorithm1(target, n_layers, channels, base=base)
    return list(_monotone_table(n_layers, channels, float(base), target)[target])


def _monotone_table(n_layers: int, channels: int, base: float, upto: int) -> list[tuple[int, ...]]:
    """Monotone counts for targets 0..upto, cached per shape and extended on demand."""
    cap = channels - 1
    key = (n_layers, channels, base)
    if key not in _TABLES and len(_TABLES) >= 64:
        _TABLES.clear()
    table = _TABLES.setdefault(key, [tuple([0] * n_layers)])
    for t in range(len(table), upto + 1):
        prev, ref = table[-1], algorithm1(t, n_layers, channels, base=base)
        if all(r >= p for r, p in zip(ref, prev)):
            table.append(tuple(ref))
            continue
        i = max((j for j in range(n_layers) if prev[j] < cap), key=lambda j: (ref[j] - prev[j], j))
        row = list(prev)
        row[i] += 1
        table.append(tuple(row))
    return table


def algorithm1(target: int, n_layers: int, channels: int, *, base: float = 2.0) -> list[int]:
    """The reference's passes as they are: weights base^i, cap H - 1, layer 0 last."""
    cap = channels - 1
    pruned = [0] * n_layers
    open_layers = list(range(1, n_layers)) or [0]
    remaining = target
    while remaining > 0 and open_layers:
        top = open_layers[-1]
        weights = [float(base) ** (i - top) for i in open_layers]  # base^i scaled by base^-top
        total_w = sum(weights)
        before = sum(pruned)
        still_open = []
        for i, w in zip(open_layers, weights):
            give = int(round(w / total_w * remaining))
            if pruned[i] + give >= cap:
                pruned[i] = cap  # saturated: this layer leaves the pool
            else:
                pruned[i] += give
                still_open.append(i)
        if sum(pruned) == before:
            # every share rounded to 0 (possible when base is close to 1): hand out the rest one
            # channel at a time, heaviest (deepest) layer first, so the loop always ends
            for i in sorted(still_open, reverse=True)[:remaining]:
                pruned[i] += 1
            still_open = [i for i in still_open if pruned[i] < cap]
        remaining = target - sum(pruned)
        open_layers = still_open
        if not open_layers and pruned[0] < cap and remaining > 0:
            open_layers = [0]  # all deeper layers are saturated: layer 0 joins
    _trim_overshoot(pruned, target)
    return pruned


def _trim_overshoot(pruned: list[int], target: int) -> None:
    """Rounding in a pass can hand out a channel or two more than the target: take them back
    from the layers that hold the most (ties: the shallowest), so the total is exactly T."""
    excess = sum(pruned) - target
    while excess > 0:
        i = max(range(len(pruned)), key=lambda j: (pruned[j], -j))
        pruned[i] -= 1
        excess -= 1


def random_placement(target: int, n_layers: int, channels: int, *, seed: int) -> list[int]:
    """`target` pruned channels placed uniformly over the n * H slots, at most H - 1 per layer.

    One seeded permutation of the slots is walked in order (skipping layers already at H - 1),
    so for a fixed seed a higher target only adds channels: counts nest as the rate rises.
    """
    cap = channels - 1
    reachable = min(target, n_layers * cap)
    order = list(range(n_layers * channels))
    _random.Random(f"allocation-random-{seed}").shuffle(order)
    pruned = [0] * n_layers
    placed = 0
    for slot in order:
        if placed == reachable:
            break
        i = slot // channels
        if pruned[i] < cap:
            pruned[i] += 1
            placed += 1
    return pruned


def _check(rate: float, n_layers: int, channels: int, base: float) -> None:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
        raise ConfigError(f"allocation rate={rate!r} must be a number in [0, 1]")
    for key, value in (("n_layers", n_layers), ("channels", channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"allocation {key}={value!r} must be a positive integer")
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not base > 1.0 or base > 1e6:
        raise ConfigError(f"allocation base={base!r} must be a number greater than 1")
