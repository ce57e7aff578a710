"""The Frechet distance between feature statistics of two image sets (FID when the
features are Inception-v3's pool features, Heusel et al. 2017).

For Gaussians `N(mu1, S1)` and `N(mu2, S2)` the squared 2-Wasserstein distance is

  `d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^{1/2} S2 S1^{1/2})^{1/2})`.

Feature means and covariances are computed in JAX (`feature_statistics`, batched over
the images); the trace of the matrix square root is taken on the host in float64 from
two symmetric eigendecompositions (`S1^{1/2}`, then the eigenvalues of the symmetric
PSD product `S1^{1/2} S2 S1^{1/2}`), which needs no `sqrtm` of a non-symmetric matrix
and no imaginary parts clipped away. Negative eigenvalues (round-off) are set to 0.

A feature network is any callable `features(images uint8[N, H, W, C]) -> float[N, F]`:
`genjax.eval.feature_classifier` (trained on the dataset itself, no download), or
`genjax.eval.inception` (the FID Inception-v3 from a user-supplied weights file, for
numbers comparable with published FID).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

FeatureFn = Callable[[np.ndarray], jax.Array]


def feature_statistics(features: jax.Array) -> tuple[np.ndarray, np.ndarray]:
  """`float[N, F]` -> `(mean float64[F], covariance float64[F, F])` (unbiased, N - 1)."""
  f = jnp.asarray(features, jnp.float32)
  if f.ndim != 2 or f.shape[0] < 2:
    raise ValueError(f"feature_statistics needs features [N, F] with N >= 2, got shape {f.shape}")
  mean = jnp.mean(f, axis=0)
  centred = f - mean
  cov = centred.T @ centred / (f.shape[0] - 1)
  return np.asarray(mean, np.float64), np.asarray(cov, np.float64)


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
  w, v = np.linalg.eigh(s)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mean1, cov1, mean2, cov2) -> float:
  """The Frechet distance `d^2` between `N(mean1, cov1)` and `N(mean2, cov2)` (float64 on the host)."""
  mean1, mean2 = np.asarray(mean1, np.float64), np.asarray(mean2, np.float64)
  cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
  f = mean1.shape[0]
  for name, m, c in (("1", mean1, cov1), ("2", mean2, cov2)):
    if m.shape != (f,) or c.shape != (f, f):
      raise ValueError(f"expected mean{name} [{f}] and cov{name} [{f}, {f}], got {m.shape} and {c.shape}")
  cov1, cov2 = (cov1 + cov1.T) / 2, (cov2 + cov2.T) / 2
  r1 = _sqrt_psd(cov1)
  product = r1 @ cov2 @ r1
  eig = np.linalg.eigvalsh((product + product.T) / 2)
  trace_sqrt = float(np.sum(np.sqrt(np.clip(eig, 0.0, None))))
  return float(np.sum(np.square(mean1 - mean2)) + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt)


def batched_features(features: FeatureFn, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
  """Applies `features` to `images` `uint8[N, H, W, C]` in batches (the last one padded); `float32[N, F]`."""
  images = np.asarray(images)
  n = len(images)
  out = []
  for start in range(0, n, batch_size):
    chunk = images[start : start + batch_size]
    pad = batch_size - len(chunk) if n > batch_size else 0
    if pad:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
    out.append(np.asarray(features(chunk))[: len(chunk) - pad])
  return np.concatenate(out).astype(np.float32)


def frechet_distance_images(
  features: FeatureFn, images1: np.ndarray, images2: np.ndarray, batch_size: int = 500
) -> float:
  """The Frechet distance between the feature statistics of two `uint8[N, H, W, C]` image sets."""
  s1 = feature_statistics(batched_features(features, images1, batch_size))
  s2 = feature_statistics(batched_features(features, images2, batch_size))
  return frechet_distance(*s1, *s2)
