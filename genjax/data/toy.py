"""Toy 1-D and 2-D densities, sampled with numpy from an explicit Generator.

Every toy is a ``ToySpec`` in the ``TOYS`` registry. ``spec.sample(rng, n)``
returns ``(x float32[n, D], label int32[n] or None)`` where ``label`` is the
mixture component of each point (None for toys without components), and
``spec.log_prob(x[n, D]) -> float64[n]`` is the exact log density (None for
``two_moons``, whose density has no closed form).

2-D: two_moons, ring8, grid25, checkerboard. 1-D: gaussian_1d, bimodal_near,
bimodal_far (x = s * d / 2 + 0.5 * z, s = +-1 with probability 1/2,
z ~ N(0, 1), d = 2 or 8).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

SampleFn = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray | None]]
LogProbFn = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class ToySpec:
  """A toy density.

  Attributes:
    name: registry name.
    dim: D, the dimension of a sample.
    sample: ``sample(rng, n) -> (x float32[n, D], label int32[n] | None)``.
    modes: component means float64[K, D], or None.
    mode_std: per-coordinate std of each Gaussian component, or None when
      components are not Gaussian.
    log_prob: ``log_prob(x[n, D]) -> float64[n]`` exact log density, or None.
    num_components: K when ``sample`` returns labels, else 0.
  """

  name: str
  dim: int
  sample: SampleFn
  modes: np.ndarray | None
  mode_std: float | None
  log_prob: LogProbFn | None
  num_components: int = 0


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
  m = np.max(a, axis=axis, keepdims=True)
  m = np.where(np.isfinite(m), m, 0.0)
  return np.squeeze(m, axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def _as_rows(x: np.ndarray, dim: int) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim != 2 or x.shape[1] != dim:
    raise ValueError(f"expected x of shape [n, {dim}], got {x.shape}")
  return x


def gaussian_mixture(name: str, means: np.ndarray, std: float) -> ToySpec:
  """Equal-weight mixture of isotropic Gaussians N(means[k], std^2 I)."""
  means = np.asarray(means, np.float64)
  k, dim = means.shape

  def sample(rng: np.random.Generator, n: int):
    label = rng.integers(0, k, size=n)
    x = means[label] + std * rng.standard_normal((n, dim))
    return x.astype(np.float32), label.astype(np.int32)

  def log_prob(x: np.ndarray) -> np.ndarray:
    x = _as_rows(x, dim)
    sq = np.sum((x[:, None, :] - means[None]) ** 2, axis=-1)  # [n, K]
    log_comp = -0.5 * sq / std**2 - dim * (np.log(std) + 0.5 * np.log(2 * np.pi))
    return _logsumexp(log_comp, axis=1) - np.log(k)

  return ToySpec(name, dim, sample, means, std, log_prob, num_components=k if k > 1 else 0)


def _gaussian_1d() -> ToySpec:
  spec = gaussian_mixture("gaussian_1d", np.zeros((1, 1)), 1.0)

  def sample(rng: np.random.Generator, n: int):
    return rng.standard_normal((n, 1)).astype(np.float32), None

  return dataclasses.replace(spec, sample=sample)


# two_moons: sklearn's make_moons (noise 0.05), then (p - center) * scale so
# the data is centred with std about 1 on average over the two coordinates.
_MOONS_CENTER = np.array([0.5, 0.25])
_MOONS_SCALE = 1.4


def _two_moons() -> ToySpec:

  def sample(rng: np.random.Generator, n: int):
    label = rng.integers(0, 2, size=n)
    t = rng.uniform(0.0, np.pi, size=n)
    outer = np.stack([np.cos(t), np.sin(t)], axis=1)
    inner = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], axis=1)
    p = np.where(label[:, None] == 0, outer, inner)
    p = p + 0.05 * rng.standard_normal((n, 2))
    x = (p - _MOONS_CENTER) * _MOONS_SCALE
    return x.astype(np.float32), label.astype(np.int32)

  return ToySpec("two_moons", 2, sample, None, None, None, num_components=2)


# checkerboard: 4x4 board of unit squares over [-2, 2]^2; the "dark" squares
# are cells (i, j) (lower-left corner (-2 + i, -2 + j)) with i + j even.
_DARK_CELLS = np.array([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0], np.float64)  # [8, 2]


def _checkerboard() -> ToySpec:
  corners = _DARK_CELLS - 2.0

  def sample(rng: np.random.Generator, n: int):
    label = rng.integers(0, len(corners), size=n)
    x = corners[label] + rng.uniform(0.0, 1.0, size=(n, 2))
    return x.astype(np.float32), label.astype(np.int32)

  def log_prob(x: np.ndarray) -> np.ndarray:
    x = _as_rows(x, 2)
    cell = np.floor(x + 2.0)
    inside = np.all((cell >= 0) & (cell <= 3), axis=1)
    dark = inside & (np.sum(cell, axis=1) % 2 == 0)
    return np.where(dark, -np.log(len(corners)), -np.inf)

  return ToySpec("checkerboard", 2, sample, corners + 0.5, None, log_prob, num_components=len(corners))


def _ring8() -> ToySpec:
  angle = 2 * np.pi * np.arange(8) / 8
  means = 2.0 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
  return gaussian_mixture("ring8", means, 0.05)


def _grid25() -> ToySpec:
  g = np.array([-4.0, -2.0, 0.0, 2.0, 4.0])
  means = np.stack(np.meshgrid(g, g, indexing="ij"), axis=-1).reshape(-1, 2)
  return gaussian_mixture("grid25", means, 0.05)


def _bimodal(name: str, distance: float) -> ToySpec:
  return gaussian_mixture(name, np.array([[-distance / 2], [distance / 2]]), 0.5)


TOYS: dict[str, ToySpec] = {
  spec.name: spec
  for spec in (
    _two_moons(),
    _ring8(),
    _grid25(),
    _checkerboard(),
    _gaussian_1d(),
    _bimodal("bimodal_near", 2.0),
    _bimodal("bimodal_far", 8.0),
  )
}


def make_toy_split(name: str, n: int, seed: int) -> dict[str, np.ndarray]:
  """A fixed toy split ``{'x': float32[n, D], 'label': int32[n]}``.

  ``'label'`` is only present for toys with components. Sampled with
  ``np.random.default_rng(seed)`` (the loader uses seed 0 for train, 1 for
  test).
  """
  if name not in TOYS:
    raise ValueError(f"unknown toy {name!r}; valid toys: {sorted(TOYS)}")
  x, label = TOYS[name].sample(np.random.default_rng(seed), int(n))
  out = {"x": x}
  if label is not None:
    out["label"] = label
  return out
