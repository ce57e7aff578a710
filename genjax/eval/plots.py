"""Pictures of 1-D and 2-D samples as uint8 images, computed in JAX (so they jit).

Toy families return these from `sample_grid`, so the train loop writes a picture of
vector samples exactly as it writes a grid of image samples.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def scatter_image(points: jax.Array, lo: float, hi: float, size: int = 128) -> jax.Array:
  """A 2-D histogram of `points` `float[N, 2]` over `[lo, hi]^2` as `uint8[size, size, 1]`.

  Dark is dense (white background); row 0 is the top (largest second coordinate).
  Points outside the square are dropped.
  """
  points = jnp.asarray(points, jnp.float32)
  if points.ndim != 2 or points.shape[1] != 2:
    raise ValueError(f"scatter_image expects points float[N, 2], got shape {points.shape}")
  if not hi > lo:
    raise ValueError(f"scatter_image needs hi > lo, got lo={lo}, hi={hi}")
  cell = (points - lo) / (hi - lo) * size
  col = jnp.floor(cell[:, 0]).astype(jnp.int32)
  row = size - 1 - jnp.floor(cell[:, 1]).astype(jnp.int32)
  inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
  counts = (
    jnp.zeros((size, size), jnp.float32)
    .at[jnp.clip(row, 0, size - 1), jnp.clip(col, 0, size - 1)]
    .add(inside.astype(jnp.float32))
  )
  return _shade(counts)[..., None]


def histogram_image(values: jax.Array, lo: float, hi: float, size: int = 128) -> jax.Array:
  """A histogram of `values` `float[N]` (or `[N, 1]`) over `[lo, hi]` as `uint8[size, size, 1]`.

  `size` bins; each column is a bar whose height is the bin count relative to the
  largest bin. Values outside the range are dropped.
  """
  values = jnp.asarray(values, jnp.float32).reshape(-1)
  if not hi > lo:
    raise ValueError(f"histogram_image needs hi > lo, got lo={lo}, hi={hi}")
  col = jnp.floor((values - lo) / (hi - lo) * size).astype(jnp.int32)
  inside = (col >= 0) & (col < size)
  counts = jnp.zeros((size,), jnp.float32).at[jnp.clip(col, 0, size - 1)].add(inside.astype(jnp.float32))
  heights = counts / jnp.maximum(counts.max(), 1.0) * size
  rows = jnp.arange(size, dtype=jnp.float32)[::-1, None]  # row 0 is the top
  bars = rows < heights[None, :]
  return jnp.where(bars, 0, 255).astype(jnp.uint8)[..., None]


def _shade(counts: jax.Array) -> jax.Array:
  """Counts -> uint8 grey levels, white for empty cells, log-scaled so sparse points show."""
  level = jnp.log1p(counts) / jnp.maximum(jnp.log1p(counts.max()), 1e-6)
  return jnp.round(255.0 * (1.0 - level)).astype(jnp.uint8)
