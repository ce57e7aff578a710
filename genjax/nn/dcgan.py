"""GAN networks: DCGAN generator and discriminator (Radford et al. 2016) and MLPs for toys.

DCGAN rules followed: no pooling (strided convolutions in the discriminator, stride-2
transposed convolutions in the generator), batch norm in both networks except the
generator's output layer and the discriminator's input layer, ReLU in the generator
with a tanh output, leaky ReLU (slope 0.2) in the discriminator. Kernels are 4x4 with
stride 2 (a kernel divisible by the stride avoids checkerboard artefacts). The transposed
convolutions are `genjax.nn.conv_transpose.ConvTranspose` (Flax's `ConvTranspose` map and
parameters, in the forms XLA:CPU runs fast).

Sizes: the generator projects `z` to an `s0 x s0` map and doubles it once per entry
of `features`, so `s0 = H / 2**len(features)`: 28x28 uses two stages (7 -> 14 -> 28),
32x32 three (4 -> 8 -> 16 -> 32), 64x64 four (4 -> ... -> 64).

Class-conditional variants (`num_classes > 0`): the generator sees `[z, one_hot(y)]`,
the discriminator the image with `num_classes` constant one-hot channels appended
(Mirza & Osindero 2014). Batch-norm statistics live in the `batch_stats` collection:
call `apply(..., train=True, mutable=['batch_stats'])` while training and
`train=False` (running averages) otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from genjax.nn.conv_transpose import ConvTranspose

BN_MOMENTUM = 0.9
LEAK = 0.2


def _check_label(label, num_classes: int) -> None:
  if num_classes > 0 and label is None:
    raise ValueError(f"this network is conditional (num_classes = {num_classes}); pass label")
  if num_classes == 0 and label is not None:
    raise ValueError("this network is unconditional (num_classes = 0); it takes no label")


def start_size(image_shape: Sequence[int], num_stages: int) -> int:
  """The generator's first map size `H / 2**num_stages`; raises if that is not a whole size >= 2."""
  h, w = int(image_shape[0]), int(image_shape[1])
  f = 2**num_stages
  if h != w or h % f or h // f < 2:
    raise ValueError(
      f"DCGAN needs square images whose size is divisible by 2**{num_stages} = {f} with at least "
      f"a 2x2 start (one doubling per entry of features); got {h}x{w}"
    )
  return h // f


class DCGANGenerator(nn.Module):
  """`z [B, Z]` (+ `label int[B]`) -> images `[B, H, W, C]` in (-1, 1).

  Attributes:
    image_shape: (H, W, C) of the output.
    features: channels after the projection and after each hidden stage, widest
      first, e.g. (64, 32) for 28x28: 7x7x64 -> 14x14x32 -> 28x28xC.
    num_classes: 0 = unconditional.
  """

  image_shape: Sequence[int]
  features: Sequence[int] = (64, 32)
  num_classes: int = 0
  dtype: Any = None  # the compute dtype (None: the inputs'); parameters are `param_dtype`
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array, label: jax.Array | None = None, train: bool = True) -> jax.Array:
    kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
    _check_label(label, self.num_classes)
    s0 = start_size(self.image_shape, len(self.features))
    c = self.image_shape[-1]
    if label is not None:
      z = jnp.concatenate([z, jax.nn.one_hot(label, self.num_classes, dtype=z.dtype)], axis=-1)

    def bn(name):
      return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, name=name, **kw)

    x = nn.Dense(s0 * s0 * self.features[0], use_bias=False, name="project", **kw)(z)
    x = nn.relu(bn("bn_project")(x)).reshape((z.shape[0], s0, s0, self.features[0]))
    for i, f in enumerate(self.features[1:]):
      x = ConvTranspose(f, (4, 4), strides=(2, 2), padding="SAME", use_bias=False, name=f"deconv_{i}", **kw)(x)
      x = nn.relu(bn(f"bn_{i}")(x))
    x = ConvTranspose(c, (4, 4), strides=(2, 2), padding="SAME", name="deconv_out", **kw)(x)
    return jnp.tanh(x)


class DCGANDiscriminator(nn.Module):
  """Images `[B, H, W, C]` in [-1, 1] (+ `label int[B]`) -> logits `[B]`.

  Attributes:
    features: channels of the stride-2 conv stages, narrowest first, e.g. (32, 64).
    num_classes: 0 = unconditional.
  """

  features: Sequence[int] = (32, 64)
  num_classes: int = 0
  dtype: Any = None  # the compute dtype (None: the inputs'); parameters are `param_dtype`
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, label: jax.Array | None = None, train: bool = True) -> jax.Array:
    kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
    _check_label(label, self.num_classes)
    if label is not None:
      onehot = jax.nn.one_hot(label, self.num_classes, dtype=x.dtype)[:, None, None, :]
      x = jnp.concatenate([x, jnp.broadcast_to(onehot, x.shape[:3] + (self.num_classes,))], axis=-1)
    for i, f in enumerate(self.features):
      x = nn.Conv(f, (4, 4), strides=(2, 2), padding="SAME", use_bias=i == 0, name=f"conv_{i}", **kw)(x)
      if i > 0:  # no batch norm on the input layer (Radford et al.)
        x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, name=f"bn_{i}", **kw)(x)
      x = nn.leaky_relu(x, LEAK)
    return nn.Dense(1, name="logit", **kw)(x.reshape((x.shape[0], -1)))[:, 0]


class MLPGenerator(nn.Module):
  """`z [B, Z]` (+ `label int[B]`) -> samples `[B, out_dim]` (unbounded), ReLU hidden layers."""

  out_dim: int
  hidden: Sequence[int] = (128, 128)
  num_classes: int = 0
  dtype: Any = None  # the compute dtype (None: the inputs'); parameters are `param_dtype`
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array, label: jax.Array | None = None, train: bool = True) -> jax.Array:
    kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
    del train  # no batch statistics
    _check_label(label, self.num_classes)
    if label is not None:
      z = jnp.concatenate([z, jax.nn.one_hot(label, self.num_classes, dtype=z.dtype)], axis=-1)
    for i, width in enumerate(self.hidden):
      z = nn.relu(nn.Dense(width, name=f"dense_{i}", **kw)(z))
    return nn.Dense(self.out_dim, name="out", **kw)(z)


class MLPDiscriminator(nn.Module):
  """Samples `[B, D]` (+ `label int[B]`) -> logits `[B]`, leaky-ReLU hidden layers."""

  hidden: Sequence[int] = (128, 128)
  num_classes: int = 0
  dtype: Any = None  # the compute dtype (None: the inputs'); parameters are `param_dtype`
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, label: jax.Array | None = None, train: bool = True) -> jax.Array:
    kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
    del train
    _check_label(label, self.num_classes)
    if label is not None:
      x = jnp.concatenate([x, jax.nn.one_hot(label, self.num_classes, dtype=x.dtype)], axis=-1)
    for i, width in enumerate(self.hidden):
      x = nn.leaky_relu(nn.Dense(width, name=f"dense_{i}", **kw)(x), LEAK)
    return nn.Dense(1, name="logit", **kw)(x)[:, 0]
