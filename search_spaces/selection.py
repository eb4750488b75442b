"""Channel selection: which of a layer's kept channels are pruned at the next rate.

`counts[i]` is the total pruned in layer i that the rate calls for (as `allocate` returns it,
against the original H_i channels); layer i then keeps H_i - counts[i] channels. Only channels
still kept can go, so incremental stages nest; a layer that already keeps fewer loses nothing.

- random (the paper): a seeded sample of the kept channels, reproducible per (seed, layer).
- importance (after LAST): the lowest-scoring channels go first (ties: lower index first).
- mixed: a seeded sample among the `candidates` x count lowest-scoring channels, so seeds still
  explore while obviously important channels stay.

Each policy is a function registered in `policies.SELECTION` under its config name
(`search.selection.policy`), with `needs_scores`; `select` looks the name up.
"""

from __future__ import annotations

import math
import random as _random
from typing import Optional, Sequence, Union

from search_spaces.errors import ConfigError
from search_spaces.policies import SELECTION


def n_to_prune(counts: Sequence[int], kept: Sequence[Sequence[int]], channels: Union[int, Sequence[int]]) -> list[int]:
    """How many more channels each layer loses: max(0, len(kept_i) - (H_i - counts_i))."""
    H = _channels_per_layer(channels, len(kept))
    return [max(0, len(k) - (h - int(c))) for k, h, c in zip(kept, H, counts)]


def select(policy: str, counts: Sequence[int], kept: Sequence[Sequence[int]], *, seed: int,
           channels: Union[int, Sequence[int]], scores: Optional[Sequence[Sequence[float]]] = None,
           candidates: float = 2.0) -> list[list[int]]:
    """New kept channels per layer (original numbering, sorted), a subset of `kept`.

    counts: pruned per layer at the new rate (against H); kept: the current kept channels per
    layer; channels: H (int, same for every layer) or H_i per layer; scores: per layer, aligned
    with `kept` (required by importance and mixed); candidates: the mixed pool size factor.
    """
    pick = SELECTION.get(policy)
    needs_scores = SELECTION.info(policy)["needs_scores"]
    given = [[int(c) for c in k] for k in kept]  # the caller's order: scores align with it
    kept = [sorted(k) for k in given]
    H = _channels_per_layer(channels, len(kept))
    _check(counts, kept, H)
    if needs_scores:
        if scores is None or len(scores) != len(kept):
            raise ConfigError(f"selection policy={policy!r} needs scores for each of the {len(kept)} layers")
        if not (isinstance(candidates, (int, float)) and not isinstance(candidates, bool) and candidates >= 1):
            raise ConfigError(f"selection candidates={candidates!r} must be a number >= 1")
    out = []
    for i, (k, n) in enumerate(zip(kept, n_to_prune(counts, kept, H))):
        rng = _random.Random(f"select-{policy}-{seed}-{i}")
        ranked = _rank_by_score(given[i], scores[i], i) if needs_scores and n else None  # weakest first
        gone = set(pick(k, n, rng=rng, ranked=ranked, candidates=candidates)) if n else set()
        out.append([c for c in k if c not in gone])
    return out


@SELECTION.register("random", needs_scores=False)
def random_pick(kept: list[int], n: int, *, rng: _random.Random, ranked: Optional[list[int]],
                candidates: float) -> list[int]:
    """The paper: a seeded sample of n kept channels."""
    return rng.sample(kept, n)


@SELECTION.register("importance", needs_scores=True)
def importance_pick(kept: list[int], n: int, *, rng: _random.Random, ranked: Optional[list[int]],
                    candidates: float) -> list[int]:
    """After LAST: the n lowest-scoring channels."""
    return ranked[:n]


@SELECTION.register("mixed", needs_scores=True)
def mixed_pick(kept: list[int], n: int, *, rng: _random.Random, ranked: Optional[list[int]],
               candidates: float) -> list[int]:
    """A seeded sample of n among the ceil(candidates * n) lowest-scoring channels."""
    pool = ranked[: min(len(kept), max(n, math.ceil(candidates * n)))]
    return rng.sample(pool, n)


def _rank_by_score(kept: list[int], scores: Sequence[float], layer: int) -> list[int]:
    scores = [float(s) for s in scores]
    if len(scores) != len(kept):
        raise ConfigError(f"selection: layer {layer} has {len(scores)} scores for {len(kept)} kept channels")
    if any(not math.isfinite(s) for s in scores):
        raise ConfigError(f"selection: layer {layer} scores must be finite numbers")
    return [c for _, c in sorted(zip(scores, kept))]


def _channels_per_layer(channels: Union[int, Sequence[int]], n_layers: int) -> list[int]:
    if isinstance(channels, bool):
        raise ConfigError(f"selection channels={channels!r} must be H or a list of H per layer")
    if isinstance(channels, int):
        H = [channels] * n_layers
    else:
        H = [int(h) for h in channels]
    if len(H) != n_layers or any(h < 1 for h in H):
        raise ConfigError(f"selection channels={channels!r} must be a positive H or one H per layer "
                          f"({n_layers} layers)")
    return H


def _check(counts: Sequence[int], kept: list[list[int]], H: list[int]) -> None:
    if len(counts) != len(kept):
        raise ConfigError(f"selection: {len(counts)} counts for {len(kept)} layers of kept channels")
    for i, (c, k, h) in enumerate(zip(counts, kept, H)):
        if isinstance(c, bool) or not 0 <= int(c) <= h:
            raise ConfigError(f"selection: counts[{i}]={c!r} must be in 0..{h}")
        if len(set(k)) != len(k) or any(not 0 <= x < h for x in k):
            raise ConfigError(f"selection: kept[{i}] must hold distinct channels in 0..{h - 1}")
