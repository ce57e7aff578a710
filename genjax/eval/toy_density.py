"""Exact densities and entropies of the 2-D toys, for judging a learned density.

* `log_prob(name, x)`: the toy's exact log-density `float64[n]`; for `two_moons`, whose
  density `genjax.data.toy` does not give in closed form, by quadrature over the moons'
  parameter (each moon is a uniform point on a half circle plus isotropic Gaussian
  noise, so the density is a 1-D integral of Gaussians).
* `entropy(name, n, seed)`: Monte Carlo `-E[log p(x)]` over `n` fresh samples, with its
  standard error: the best test NLL (nats) any model can reach in expectation.
* `grid_integral(log_p, cell_area)`: the Riemann sum of a density on a grid.
"""

from __future__ import annotations

import numpy as np

from genjax.data import toy

# The two_moons construction in genjax.data.toy: sklearn-style moons with noise 0.05,
# then (p - center) * scale.
_MOONS_NOISE = 0.05


def _two_moons_log_prob(x: np.ndarray, num_points: int = 4000) -> np.ndarray:
  x = np.asarray(x, np.float64)
  t = (np.arange(num_points) + 0.5) * np.pi / num_points  # midpoint rule on [0, pi]
  outer = np.stack([np.cos(t), np.sin(t)], axis=1)
  inner = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], axis=1)
  centres = (np.concatenate([outer, inner]) - toy._MOONS_CENTER) * toy._MOONS_SCALE  # [2T, 2]
  std = _MOONS_NOISE * toy._MOONS_SCALE
  out = np.empty(len(x))
  for start in range(0, len(x), 1024):  # [chunk, 2T] at a time
    sq = np.sum((x[start : start + 1024, None, :] - centres[None]) ** 2, axis=-1)
    log_comp = -0.5 * sq / std**2 - np.log(2 * np.pi * std**2)
    m = log_comp.max(axis=1)
    out[start : start + 1024] = m + np.log(np.mean(np.exp(log_comp - m[:, None]), axis=1))
  return out


def log_prob(name: str, x: np.ndarray) -> np.ndarray:
  """Exact log-density `float64[n]` of toy `name` at `x` `[n, D]`."""
  if name == "two_moons":
    return _two_moons_log_prob(x)
  spec = toy.TOYS.get(name)
  if spec is None or spec.log_prob is None:
    raise ValueError(
      f"no exact density for toy {name!r}; expected one of "
      f"{sorted(['two_moons'] + [k for k, s in toy.TOYS.items() if s.log_prob is not None])}"
    )
  return spec.log_prob(x)


def entropy(name: str, n: int = 20_000, seed: int = 123) -> tuple[float, float]:
  """Monte Carlo entropy of toy `name` in nats and its standard error."""
  x, _ = toy.TOYS[name].sample(np.random.default_rng(seed), n)
  lp = log_prob(name, x)
  return float(-lp.mean()), float(lp.std() / np.sqrt(n))


def grid_integral(log_p: np.ndarray, cell_area: float) -> float:
  """`sum(exp(log_p)) * cell_area`: about 1 for a density whose mass lies inside the grid."""
  return float(np.sum(np.exp(np.asarray(log_p, np.float64))) * cell_area)
