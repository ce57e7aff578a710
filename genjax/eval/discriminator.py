"""A 1-D GAN's discriminator against the optimal one, `D* = p_data / (p_data + p_g)`.

For a fixed generator, the discriminator that maximizes the GAN value function is
`D*(x) = p_data(x) / (p_data(x) + p_g(x))` (Goodfellow et al. 2014, Prop. 1). On a
1-D toy `p_data` is exact (`ToySpec.log_prob`) and `p_g` is estimated by a Gaussian
kernel density estimate of generated samples (Scott's bandwidth). The gap is
reported as the mean of `|D - D*|` under the mixture `(p_data + p_g) / 2` (where the
discriminator is trained and where it matters) and the largest gap on that region.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def optimal_discriminator_gap(
  d_prob: Callable[[np.ndarray], np.ndarray],
  data_log_prob: Callable[[np.ndarray], np.ndarray],
  samples: np.ndarray,
  lo: float,
  hi: float,
  num_points: int = 400,
) -> dict[str, float]:
  """Compares `d_prob(x float32[M, 1]) -> D(x) [M]` with `D*` on a grid of `[lo, hi]`.

  `samples` `[N, 1]` are the generator's. Returns `d_gap_mean` (E_mix |D - D*|),
  `d_gap_max` (max |D - D*| where the mixture density exceeds 1% of its peak) and
  `d_star_mean` / `d_mean` (E_mix of each), all under the grid's mixture weights.
  """
  from scipy.stats import gaussian_kde

  samples = np.asarray(samples, np.float64).reshape(-1)
  if samples.size < 2:
    raise ValueError(f"need at least 2 generated samples, got {samples.size}")
  grid = np.linspace(lo, hi, num_points)
  p_data = np.exp(data_log_prob(grid[:, None]))
  p_g = gaussian_kde(samples)(grid) if np.std(samples) > 0 else np.zeros_like(grid)
  d_star = p_data / np.maximum(p_data + p_g, 1e-300)
  d = np.asarray(d_prob(grid[:, None].astype(np.float32)), np.float64).reshape(-1)
  mix = 0.5 * (p_data + p_g)
  w = mix / mix.sum()
  region = mix > 0.01 * mix.max()
  gap = np.abs(d - d_star)
  return {
    "d_gap_mean": float(np.sum(w * gap)),
    "d_gap_max": float(gap[region].max()),
    "d_star_mean": float(np.sum(w * d_star)),
    "d_mean": float(np.sum(w * d)),
  }
