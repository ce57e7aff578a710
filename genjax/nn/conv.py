"""Convolutional encoder (strided convolutions) and decoder (transposed convolutions).

The layout follows the usual lecture VAE: each encoder stage halves the resolution
with a stride-2 3x3 convolution; the decoder mirrors it with stride-2 transposed
convolutions (`genjax.nn.conv_transpose.ConvTranspose`: Flax's map and parameters in the
forms XLA:CPU runs fast) from a small dense-projected feature map.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from genjax.nn.conv_transpose import ConvTranspose


def check_divisible(image_shape: Sequence[int], num_stages: int) -> None:
  """Raises ValueError if H and W are not divisible by 2**num_stages."""
  h, w = image_shape[0], image_shape[1]
  f = 2**num_stages
  if h % f or w % f:
    raise ValueError(
      f"image size {h}x{w} is not divisible by 2**{num_stages} = {f} "
      f"(one factor of 2 per conv stage in features); use fewer stages or pad the images"
    )


class ConvEncoder(nn.Module):
  """Strided-conv encoder.

  `[B, H, W, C]` (+ optional conditioning `[B, K]`) -> `[B, out_dim]`.
  """

  features: Sequence[int]
  out_dim: int
  hidden: int = 256
  dtype: Any = None  # the compute dtype (None: the inputs'); parameters are `param_dtype`
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array | None = None) -> jax.Array:
    kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
    check_divisible(x.shape[1:3], len(self.features))
    for i, f in enumerate(self.features):
      x = nn.Conv(f, (3, 3), strides=(2, 2), padding="SAME", name=f"conv_{i}", **kw)(x)
      x = nn.relu(x)
    x = x.reshape((x.shape[0], -1))
    if cond is not None:
      x = jnp.concatenate([x, cond], axis=-1)
    x = nn.relu(nn.Dense(self.hidden, name="dense_hidden", **kw)(x))
    return nn.Dense(self.out_dim, name="dense_out", **kw)(x)


class ConvDecoder(nn.Module):
  """Transposed-conv decoder.

  `[B, Z]` (+ optional conditioning `[B, K]`) -> `[B, H, W, out_channels]` (unnormalized).
  """

  features: Sequence[int]  # encoder order; the decoder walks it backwards
  image_shape: Sequence[int]  # (H, W, C) of the output
  hidden: int = 256
  dtype: Any = None  # the compute dtype (None: the inputs'); parameters are `param_dtype`
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array, cond: jax.Array | None = None) -> jax.Array:
    kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
    h, w, c = self.image_shape
    stages = len(self.features)
    check_divisible((h, w), stages)
    h0, w0 = h // 2**stages, w // 2**stages
    if cond is not None:
      z = jnp.concatenate([z, cond], axis=-1)
    x = nn.relu(nn.Dense(self.hidden, name="dense_hidden", **kw)(z))
    x = nn.relu(nn.Dense(h0 * w0 * self.features[-1], name="dense_map", **kw)(x))
    x = x.reshape((z.shape[0], h0, w0, self.features[-1]))
    for i, f in enumerate(reversed(self.features)):
      x = ConvTranspose(f, (3, 3), strides=(2, 2), padding="SAME", name=f"deconv_{i}", **kw)(x)
      x = nn.relu(x)
    return nn.Conv(c, (3, 3), padding="SAME", name="conv_out", **kw)(x)
