"""The PCA baseline: the best linear autoencoder at a given latent size, fitted by SVD."""

from __future__ import annotations

import numpy as np


def fit_pca(x: np.ndarray, num_components: int) -> tuple[np.ndarray, np.ndarray]:
  """Fits PCA to `x` (`[N, D]`); returns `(mean [D], components [K, D])` with orthonormal rows."""
  x = np.asarray(x, np.float64)
  if x.ndim != 2:
    raise ValueError(f"fit_pca expects [N, D] data, got shape {x.shape}")
  if not 0 < num_components <= min(x.shape):
    raise ValueError(
      f"num_components must be in [1, {min(x.shape)}] for data of shape {x.shape}, got {num_components}"
    )
  mean = x.mean(axis=0)
  _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
  return mean, vt[:num_components]


def pca_reconstruct(x: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
  """Projects `[N, D]` data onto the components and back: `[N, D]`."""
  codes = (np.asarray(x, np.float64) - mean) @ components.T
  return codes @ components + mean


def pca_reconstruction_mse(train: np.ndarray, test: np.ndarray, num_components: int) -> float:
  """Mean squared error per dimension of the rank-K PCA fitted on `train`, on `test` (`[N, D]` each)."""
  mean, comps = fit_pca(train, num_components)
  return float(np.mean(np.square(pca_reconstruct(test, mean, comps) - test)))
