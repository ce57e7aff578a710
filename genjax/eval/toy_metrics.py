"""Sample-quality statistics for the toy densities of `genjax.data.toy` (numpy, host side).

Mode coverage follows the mode-collapse literature (Srivastava et al. 2017, VEEGAN;
Metz et al. 2017, unrolled GANs): a sample is *high quality* when it lies within
`num_std` standard deviations of its nearest mode, and a mode is *covered* when at
least `min_count` high-quality samples (default: 1/4 of its share under uniform
weights, at least 1) are assigned to it.
"""

from __future__ import annotations

import numpy as np


def mode_statistics(
  samples: np.ndarray, modes: np.ndarray, mode_std: float, num_std: float = 3.0, min_count: int | None = None
) -> dict[str, float]:
  """Modes covered and the high-quality fraction of `samples` `[N, D]` against `modes` `[K, D]`.

  Returns `modes_covered` (count), `num_modes` (K), `high_quality_fraction` and
  `mode_kl`: the KL divergence from the uniform mode weights to the empirical weights
  of the high-quality samples (0 when every mode gets an equal share; large when
  the generator has collapsed onto a few modes).
  """
  samples = np.asarray(samples, np.float64)
  modes = np.asarray(modes, np.float64)
  if samples.ndim != 2 or modes.ndim != 2 or samples.shape[1] != modes.shape[1]:
    raise ValueError(
      f"expected samples [N, D] and modes [K, D] with the same D, got {samples.shape} and {modes.shape}"
    )
  if mode_std <= 0:
    raise ValueError(f"mode_std must be positive, got {mode_std}")
  n, k = len(samples), len(modes)
  dist = np.linalg.norm(samples[:, None, :] - modes[None, :, :], axis=-1)  # [N, K]
  nearest = dist.argmin(axis=1)
  good = dist[np.arange(n), nearest] <= num_std * mode_std
  counts = np.bincount(nearest[good], minlength=k)
  if min_count is None:
    min_count = max(1, int(n / k / 4))
  weights = counts / max(counts.sum(), 1)
  uniform = np.full(k, 1.0 / k)
  mode_kl = float(np.sum(uniform * (np.log(uniform) - np.log(np.maximum(weights, 1e-12)))))
  return {
    "modes_covered": float((counts >= min_count).sum()),
    "num_modes": float(k),
    "high_quality_fraction": float(good.mean()) if n else 0.0,
    "mode_kl": mode_kl,
  }


def energy_distance(x: np.ndarray, y: np.ndarray) -> float:
  """The energy distance `2 E|X-Y| - E|X-X'| - E|Y-Y'|` between samples `[N, D]` and `[M, D]`.

  Zero exactly when the two distributions are equal (Szekely & Rizzo 2013); the
  V-statistic estimate used here is >= 0 for any samples.
  """
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
    raise ValueError(f"expected x [N, D] and y [M, D] with the same D, got {x.shape} and {y.shape}")

  def mean_dist(a, b):
    return float(np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1).mean())

  return 2.0 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y)
