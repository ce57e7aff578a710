"""Pure JAX preprocessing of uint8 images (jit / vmap / grad safe).

All functions are elementwise: the input may have any shape ``[...]`` (e.g.
``uint8[B, H, W, C]``) and the output has the same shape. Randomness comes
only from an explicit ``key``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def to_unit(image: jax.Array) -> jax.Array:
  """uint8[...] in 0..255 -> float32[...] in [0, 1] (x / 255)."""
  return jnp.asarray(image, jnp.float32) / 255.0


def to_symmetric(image: jax.Array) -> jax.Array:
  """uint8[...] in 0..255 -> float32[...] in [-1, 1] (x / 127.5 - 1)."""
  return jnp.asarray(image, jnp.float32) / 127.5 - 1.0


def from_unit(x: jax.Array) -> jax.Array:
  """float[...] in [0, 1] -> uint8[...] (round(x * 255), clipped to 0..255)."""
  return jnp.clip(jnp.round(jnp.asarray(x, jnp.float32) * 255.0), 0, 255).astype(jnp.uint8)


def from_symmetric(x: jax.Array) -> jax.Array:
  """float[...] in [-1, 1] -> uint8[...] (round((x + 1) * 127.5), clipped)."""
  return jnp.clip(jnp.round((jnp.asarray(x, jnp.float32) + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def binarize_dynamic(key: jax.Array, image: jax.Array) -> jax.Array:
  """uint8[...] -> float32[...] in {0, 1}, each pixel ~ Bernoulli(x / 255).

  A fresh ``key`` per step gives the usual dynamically binarized MNIST.
  """
  p = to_unit(image)
  return jax.random.bernoulli(key, p).astype(jnp.float32)


def binarize_threshold(image: jax.Array, threshold: float = 0.5) -> jax.Array:
  """uint8[...] -> float32[...]: 1 where x / 255 > threshold, else 0."""
  return (to_unit(image) > threshold).astype(jnp.float32)


def dequantize_uniform(key: jax.Array, image: jax.Array, num_bins: int = 256) -> jax.Array:
  """uint8[...] in 0..num_bins-1 -> float32[...] in [0, 1): (x + u) / num_bins.

  ``u ~ U[0, 1)`` per pixel, so ``floor(y * num_bins) == x``. The result is
  clipped below ``(x + 1) / num_bins`` because float32 rounding of ``x + u``
  could otherwise reach the next bin.
  """
  x = jnp.asarray(image, jnp.float32)
  u = jax.random.uniform(key, x.shape, jnp.float32)
  y = (x + u) / num_bins
  upper = jnp.nextafter((x + 1.0) / num_bins, jnp.float32(0.0))
  return jnp.clip(y, x / num_bins, upper)
