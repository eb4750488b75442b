"""Per-channel importance scores: how far each channel's operator is from the identity bypass.

A kept channel c of a layer computes y_c = K_c * u_c + D_c u_c (causal convolution over L
steps); pruning it with the identity bypass replaces that operator by y_c = u_c. The error of
that swap is the operator with impulse response h_c = K_c + (D_c - 1) delta, so

- `hinf_scores`: ||h_c||_inf = max over the FFT grid (length 2L, zero padded) of
  |FFT(K_c)(w) + D_c - 1|, the worst-case gain of the error (LAST's H-infinity criterion);
- `energy_scores`: ||h_c||_2 = sqrt(sum_t h_c[t]^2), its energy;
- `normalise_layerwise`: LAST's layer-wise energy normalisation, so scores compare across layers.

Lowest scores are the cheapest to prune. Pure numpy.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from search_spaces.errors import ConfigError


def _response(K, D, L: Optional[int]) -> tuple[np.ndarray, np.ndarray]:
    K = np.asarray(K, dtype=np.float64)  # (H L) or (C H L) for bidirectional kernels
    D = np.asarray(D, dtype=np.float64)  # (H,) or (C H)
    if K.ndim == 2:
        K, D = K[None], D.reshape(1, -1)  # (1 H L), (1 H)
    if K.ndim != 3 or D.shape != K.shape[:2]:
        raise ConfigError(f"importance: kernel shape {tuple(K.shape)} and D shape {tuple(np.shape(D))} "
                          f"must be (H L) and (H,) (or (C H L) and (C H))")
    if L is not None:
        if L < 1:
            raise ConfigError(f"importance: L={L} must be a positive length")
        K = K[..., :L] if K.shape[-1] >= L else np.pad(K, [(0, 0), (0, 0), (0, L - K.shape[-1])])
    return K, D  # (C H L), (C H)


def hinf_scores(K, D, L: Optional[int] = None) -> np.ndarray:
    """max_w |FFT(K_c)(w) + D_c - 1| per channel over the 2L-point grid -> (H,).

    K: (H L) kernel of the kept channels (or (C H L), then the max over the C directions);
    D: (H,) skip term; L: the task's length (K is cut or zero padded to L first).
    """
    K, D = _response(K, D, L)
    Kf = np.fft.rfft(K, n=2 * K.shape[-1], axis=-1)  # (C H L+1); real K: |X(-w)| = |X(w)|
    gain = np.abs(Kf + (D - 1.0)[..., None])  # (C H L+1)
    return gain.max(axis=-1).max(axis=0)  # (H,)


def energy_scores(K, D, L: Optional[int] = None) -> np.ndarray:
    """||K_c + (D_c - 1) delta||_2 per channel -> (H,) (the max over directions for (C H L))."""
    K, D = _response(K, D, L)
    h = K.copy()  # (C H L)
    h[..., 0] += D - 1.0
    return np.sqrt((h**2).sum(axis=-1)).max(axis=0)  # (H,)


def normalise_layerwise(scores_per_layer: Sequence[Sequence[float]]) -> list[np.ndarray]:
    """LAST's energy normalisation, per layer: s_c^2 / sum of s_j^2 over the channels j with s_j >= s_c.

    A layer's unique strongest channel scores 1; a channel whose removal (with all weaker ones)
    loses little of its layer's energy scores near 0, so scores compare across layers.
    """
    out = []
    for i, scores in enumerate(scores_per_layer):
        s = np.asarray(scores, dtype=np.float64).reshape(-1)  # (H_kept,)
        if not np.all(np.isfinite(s)) or np.any(s < 0):
            raise ConfigError(f"importance: layer {i} scores must be finite and >= 0")
        e = s**2  # (H_kept,)
        desc = np.sort(e)[::-1]  # (H_kept,)
        cum = np.cumsum(desc)  # cum[k]: energy of the k+1 strongest channels
        # energy of every channel at least as strong as c (ties count together)
        n_ge = len(desc) - np.searchsorted(np.sort(e), e, side="left")  # (H_kept,)
        total = cum[n_ge - 1] if len(e) else cum  # (H_kept,)
        out.append(np.divide(e, total, out=np.zeros_like(e), where=total > 0))
    return out
