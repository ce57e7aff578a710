"""Paths between latent vectors: linear and spherical interpolation (jax only)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def lerp(a: jax.Array, b: jax.Array, t: jax.Array) -> jax.Array:
  """`(1 - t) a + t b` for `[..., Z]` vectors and `t` in [0, 1] (broadcast)."""
  return (1.0 - t) * a + t * b


def slerp(a: jax.Array, b: jax.Array, t: jax.Array) -> jax.Array:
  """Spherical interpolation between `[..., Z]` vectors (along the last axis) at `t` in [0, 1].

  `sin((1 - t) w) / sin(w) a + sin(t w) / sin(w) b` with `w` the angle between `a` and
  `b`; linear where the vectors are (anti)parallel to within 1e-6 (`sin w` ~ 0), so the
  result is finite everywhere. `t` broadcasts against `[..., 1]`.
  """
  an = a / jnp.linalg.norm(a, axis=-1, keepdims=True)
  bn = b / jnp.linalg.norm(b, axis=-1, keepdims=True)
  omega = jnp.arccos(jnp.clip(jnp.sum(an * bn, -1, keepdims=True), -1.0, 1.0))
  so = jnp.sin(omega)
  safe = so > 1e-6
  wa = jnp.where(safe, jnp.sin((1 - t) * omega) / jnp.where(safe, so, 1.0), 1 - t)
  wb = jnp.where(safe, jnp.sin(t * omega) / jnp.where(safe, so, 1.0), t)
  return wa * a + wb * b
