"""Per-channel importance scores: how far each channel's operator is from the identity bypass.

A kept channel c of a layer computes y_c = K_c * u_c + D_c u_c (causal convolution over L
steps); pruning it with the identity bypass replaces that operator by y_c = u_c. The error of
that swap is the operator with impulse response h_c = K_c + (D_c - 1) delta, so

- `hinf_scores`: ||h_c||_inf = max over the FFT grid (length 2L, zero padded) of
  |FFT(K_c)(w) + D_c - 1|, the worst-case gain of the error (LAST's H-infinity criterion);
- `energy_scores`: ||h_c||_2 = sqrt(sum_t h_c[t]^2), its energy.

Lowest scores are the cheapest to prune. Both are registered in `policies.IMPORTANCE` under the
names `search.selection.score` takes (hinf, energy). Pure numpy.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from search_spaces.errors import ConfigError
from search_spaces.policies import IMPORTANCE


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


@IMPORTANCE.register("hinf")
def hinf_scores(K, D, L: Optional[int] = None) -> np.ndarray:
    """max_w |FFT(K_c)(w) + D_c - 1| per channel over the 2L-point grid -> (H,).

    K: (H L) kernel of the kept channels (or (C H L), then the max over the C directions);
    D: (H,) skip term; L: the task's length (K is cut or zero padded to L first).
    """
    K, D = _response(K, D, L)
    Kf = np.fft.rfft(K, n=2 * K.shape[-1], axis=-1)  # (C H L+1); real K: |X(-w)| = |X(w)|
    gain = np.abs(Kf + (D - 1.0)[..., None])  # (C H L+1)
    return gain.max(axis=-1).max(axis=0)  # (H,)


@IMPORTANCE.register("energy")
def energy_scores(K, D, L: Optional[int] = None) -> np.ndarray:
    """||K_c + (D_c - 1) delta||_2 per channel -> (H,) (the max over directions for (C H L))."""
    K, D = _response(K, D, L)
    h = K.copy()  # (C H L)
    h[..., 0] += D - 1.0
    return np.sqrt((h**2).sum(axis=-1)).max(axis=0)  # (H,)
