"""Bijective layers for RealNVP-style normalizing flows (Dinh et al. 2017).

Every layer maps `x -> (y, log_det)` in `forward` and `y -> x` in `inverse`, where
`log_det` `[B]` is `log |det dy_i / dx_i|` of each example. Layers with parameters are
Flax modules with `forward(x, train)` and `inverse(y)` methods (call them with
`module.apply(variables, x, train, method='forward')`); parameter-free ones are plain
functions.

* `squeeze` / `unsqueeze`: space to depth, `[B, H, W, C] <-> [B, H/2, W/2, 4C]` (log-det 0).
* `AffineCoupling`: `y = m * x + (1 - m) * (x * exp(s) + t)` with `s, t` computed from
  `m * x`; masks are a checkerboard over pixels, a half of the channels, or (for
  vectors) alternating coordinates. `s = scale * tanh(raw)` with a learned per-channel
  scale keeps the log-scale bounded (the paper's parameterization); the network's last
  layer starts at zero, so every coupling starts as the identity.
* `FlowBatchNorm`: `y = (x - mean) / sqrt(var + eps) * exp(log_gamma) + beta` per
  channel. In train mode the batch statistics are used (and the running averages in the
  `batch_stats` collection are updated); in eval mode, and always in `inverse`, the
  running averages. The log-determinant treats the statistics as constants, as in the
  paper: in train mode it is the exact log-det of the map the eval mode would apply
  with the running statistics replaced by the batch's.
* `MultiScaleFlow`: the multi-scale architecture: at each scale three checkerboard
  couplings, a squeeze, three channel couplings, then half of the channels are factored
  out as latents; the last scale is four checkerboard couplings.
* `VectorFlow`: couplings with MLP networks on `[B, D]` vectors (the 2-D toys).

Precision: the couplings' networks (`ResNetST`, `MLPST`) compute in `dtype` (e.g. bfloat16)
with `param_dtype` parameters; their outputs are cast to float32, so the bijections, the
log-determinants and the batch norm (its statistics included) are float32 whatever `dtype`.

The logit preprocessing of [0, 1] data with its Jacobian lives with the other pure
likelihood math in `genjax.losses` (`logit_transform`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from genjax.nn import conv2d, coupling_net

MASKS = ("checkerboard", "channel", "alternate")


def _sum_per_example(x: jax.Array) -> jax.Array:
  return jnp.sum(x.reshape((x.shape[0], -1)), axis=-1)


# --------------------------------------------------------------------------- squeeze


def squeeze(x: jax.Array) -> jax.Array:
  """Space to depth: `[B, H, W, C] -> [B, H/2, W/2, 4C]`; each 2x2 patch becomes 4C channels."""
  b, h, w, c = x.shape
  if h % 2 or w % 2:
    raise ValueError(f"squeeze needs even height and width, got shape {x.shape}")
  x = x.reshape(b, h // 2, 2, w // 2, 2, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h // 2, w // 2, 4 * c)


def unsqueeze(x: jax.Array) -> jax.Array:
  """Depth to space, the inverse of `squeeze`: `[B, H, W, 4C] -> [B, 2H, 2W, C]`."""
  b, h, w, c4 = x.shape
  if c4 % 4:
    raise ValueError(f"unsqueeze needs a multiple of 4 channels, got shape {x.shape}")
  c = c4 // 4
  x = x.reshape(b, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, 2 * h, 2 * w, c)


# --------------------------------------------------------------------------- networks


class ResNetST(nn.Module):
  """Residual conv net for a coupling's shift and log-scale: `[B, H, W, C_in] -> [B, H, W, out]`.

  A 3x3 conv to `features`, `num_blocks` blocks `h + conv(relu(conv(relu(h))))`, ReLU and
  a zero-initialized 3x3 conv to `out` channels.
  """

  features: int
  num_blocks: int
  out: int
  dtype: Any = None  # the compute dtype (None: the inputs'); parameters are `param_dtype`
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
    if self.num_blocks == 0 and self._fused(x):
      # conv_out(relu(conv_in(x))) as one fused CPU kernel; the same parameters
      k_in, b_in = _ConvParams(self.features, name="conv_in", param_dtype=self.param_dtype)(x.shape[-1])
      k_out, b_out = _ConvParams(
        self.out, kernel_init=nn.initializers.zeros, name="conv_out", param_dtype=self.param_dtype
      )(self.features)
      return coupling_net.conv_net(x, k_in, b_in, k_out, b_out)
    h = conv2d.Conv(self.features, (3, 3), name="conv_in", **kw)(x)  # narrow input: im2col
    for i in range(self.num_blocks):
      r = nn.Conv(self.features, (3, 3), name=f"block_{i}_a", **kw)(nn.relu(h))
      r = nn.Conv(self.features, (3, 3), name=f"block_{i}_b", **kw)(nn.relu(r))
      h = h + r
    # narrow output: summed tap responses
    return conv2d.Conv(self.out, (3, 3), kernel_init=nn.initializers.zeros, name="conv_out", **kw)(nn.relu(h))

  def _fused(self, x: jax.Array) -> bool:
    f32 = jnp.dtype(jnp.float32)
    return (
      jnp.dtype(self.param_dtype) == f32
      and (self.dtype is None or jnp.dtype(self.dtype) == f32)
      and coupling_net.fusable(x, self.out)
    )


class _ConvParams(nn.Module):
  """The parameters `conv2d.Conv(features, (3, 3))` creates (same names, shapes, initializers), unapplied."""

  features: int
  kernel_init: nn.initializers.Initializer = conv2d.default_kernel_init
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, in_features: int) -> tuple[jax.Array, jax.Array]:
    kernel = self.param("kernel", self.kernel_init, (3, 3, in_features, self.features), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), self.param_dtype)
    return kernel, bias


class MLPST(nn.Module):
  """MLP for a vector coupling: `[B, D] -> [B, out]`, ReLU hidden layers, zero-initialized output."""

  hidden: Sequence[int]
  out: int
  dtype: Any = None  # the compute dtype (None: the inputs'); parameters are `param_dtype`
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
    for i, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, name=f"dense_{i}", **kw)(x))
    return nn.Dense(self.out, kernel_init=nn.initializers.zeros, name="dense_out", **kw)(x)


# --------------------------------------------------------------------------- coupling


def coupling_mask(kind: str, shape: Sequence[int], parity: int) -> jax.Array:
  """The 0/1 mask (1 = passed through and conditioned on) for a per-example `shape`.

  'checkerboard': `[H, W, 1]`, 1 where `(h + w + parity)` is even. 'alternate': `[D]`,
  1 where `(d + parity)` is even. 'channel': `[C]`, 1 on the first half of the channels
  for parity 0, the second half for parity 1.
  """
  if kind == "checkerboard":
    h, w = shape[0], shape[1]
    grid = jnp.arange(h)[:, None] + jnp.arange(w)[None, :] + parity
    return (grid % 2 == 0).astype(jnp.float32)[..., None]
  if kind == "alternate":
    return ((jnp.arange(shape[-1]) + parity) % 2 == 0).astype(jnp.float32)
  if kind == "channel":
    c = shape[-1]
    if c % 2:
      raise ValueError(f"a channel mask needs an even number of channels, got shape {tuple(shape)}")
    first = (jnp.arange(c) < c // 2).astype(jnp.float32)
    return first if parity == 0 else 1.0 - first
  raise ValueError(f"unknown mask {kind!r}; expected one of {MASKS}")


class AffineCoupling(nn.Module):
  """Affine coupling `y = m * x + (1 - m) * (x * exp(s) + t)`, `(s, t)` from `m * x`.

  Attributes:
    mask: 'checkerboard' or 'channel' (images `[B, H, W, C]`), 'alternate' (vectors `[B, D]`).
    parity: 0 or 1, which half is passed through.
    features, num_blocks: the residual conv net (images); hidden: the MLP widths (vectors).
  """

  mask: str
  parity: int = 0
  features: int = 32
  num_blocks: int = 2
  hidden: Sequence[int] = (64, 64)
  dtype: Any = None  # the compute dtype (None: the inputs'); parameters are `param_dtype`
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, inverse: bool = False):
    kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
    m = coupling_mask(self.mask, x.shape[1:], self.parity)
    if self.mask == "alternate":
      h = MLPST(tuple(self.hidden), 2 * x.shape[-1], name="net", **kw)(m * x)
    else:
      h = ResNetST(self.features, self.num_blocks, 2 * x.shape[-1], name="net", **kw)(m * x)
    raw, shift = jnp.split(h.astype(jnp.promote_types(x.dtype, jnp.float32)), 2, axis=-1)
    log_scale = self.param("scale", nn.initializers.ones, (x.shape[-1],)) * jnp.tanh(raw)
    if inverse:
      return m * x + (1.0 - m) * (x - shift) * jnp.exp(-log_scale)
    y = m * x + (1.0 - m) * (x * jnp.exp(log_scale) + shift)
    return y, _sum_per_example((1.0 - m) * log_scale)

  def forward(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    """`x` -> `(y, log_det [B])`; `train` is accepted for a uniform interface (no effect)."""
    return self(x, train)

  def inverse(self, y: jax.Array) -> jax.Array:
    return self(y, inverse=True)


class ChannelCoupling(nn.Module):
  """Affine coupling over channel halves of `[B, H, W, C]`: one half conditions the other.

  Computes only the transformed half's `(s, t)` (C/2 channels each), so it is cheaper
  than an `AffineCoupling` with a channel mask, and otherwise the same map.
  """

  parity: int = 0
  features: int = 32
  num_blocks: int = 2
  dtype: Any = None  # the compute dtype (None: the inputs'); parameters are `param_dtype`
  param_dtype: Any = jnp.float32

  def _split(self, x):
    a, b = jnp.split(x, 2, axis=-1)
    return (a, b) if self.parity == 0 else (b, a)

  def _join(self, cond, moved):
    return jnp.concatenate([cond, moved] if self.parity == 0 else [moved, cond], axis=-1)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, inverse: bool = False):
    if x.shape[-1] % 2:
      raise ValueError(f"a channel coupling needs an even number of channels, got shape {x.shape}")
    cond, moved = self._split(x)
    kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
    out = moved.shape[-1]
    h = ResNetST(self.features, self.num_blocks, 2 * out, name="net", **kw)(cond)
    raw, shift = jnp.split(h.astype(jnp.promote_types(x.dtype, jnp.float32)), 2, axis=-1)
    log_scale = self.param("scale", nn.initializers.ones, (out,)) * jnp.tanh(raw)
    if inverse:
      return self._join(cond, (moved - shift) * jnp.exp(-log_scale))
    return self._join(cond, moved * jnp.exp(log_scale) + shift), _sum_per_example(log_scale)

  def forward(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    return self(x, train)

  def inverse(self, y: jax.Array) -> jax.Array:
    return self(y, inverse=True)


# --------------------------------------------------------------------------- batch norm


def batch_norm_transform(
  x: jax.Array, mean: jax.Array, var: jax.Array, log_gamma: jax.Array, beta: jax.Array, eps: float
) -> tuple[jax.Array, jax.Array]:
  """`y = (x - mean) / sqrt(var + eps) * exp(log_gamma) + beta` per channel (last axis).

  Returns `(y, log_det [B])`; the statistics are constants of the map, so the log-det
  is the number of positions per example times `sum_c log_gamma_c - log(var_c + eps) / 2`.
  """
  inv = jax.lax.rsqrt(var + eps) * jnp.exp(log_gamma)
  y = (x - mean) * inv + beta
  positions = math.prod(x.shape[1:-1])
  log_det = positions * jnp.sum(log_gamma - 0.5 * jnp.log(var + eps))
  return y, jnp.broadcast_to(log_det, (x.shape[0],))


class FlowBatchNorm(nn.Module):
  """Batch normalization as a bijection, with running statistics in `batch_stats`.

  Attributes:
    momentum: running average `r <- momentum * r + (1 - momentum) * batch`; 0 keeps the
      last batch's statistics (used in tests to compare train and eval modes).
    eps: added to the variance.
  """

  momentum: float = 0.9
  eps: float = 1e-4

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, inverse: bool = False):
    c = x.shape[-1]
    log_gamma = self.param("log_gamma", nn.initializers.zeros, (c,))
    beta = self.param("beta", nn.initializers.zeros, (c,))
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,))
    ra_var = self.variable("batch_stats", "var", jnp.ones, (c,))
    if inverse:
      return (x - beta) * jnp.exp(-log_gamma) * jnp.sqrt(ra_var.value + self.eps) + ra_mean.value
    if train:
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(x, axis=axes)
      var = jnp.mean(jnp.square(x - mean), axis=axes)
      if not self.is_initializing():
        ra_mean.value = self.momentum * ra_mean.value + (1.0 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1.0 - self.momentum) * var
    else:
      mean, var = ra_mean.value, ra_var.value
    return batch_norm_transform(x, mean, var, log_gamma, beta, self.eps)

  def forward(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    return self(x, train)

  def inverse(self, y: jax.Array) -> jax.Array:
    """Uses the running statistics (the eval-mode map)."""
    return self(y, inverse=True)


# --------------------------------------------------------------------------- flows


def _chain_forward(layers, x, train):
  log_det = jnp.zeros((x.shape[0],), x.dtype)
  for layer in layers:
    x, ld = layer.forward(x, train)
    log_det = log_det + ld
  return x, log_det


def _chain_inverse(layers, y):
  for layer in reversed(layers):
    y = layer.inverse(y)
  return y


def _with_norm(couplings, batch_norm, momentum):
  """Each coupling followed by a `FlowBatchNorm` when `batch_norm`."""
  layers = []
  for c in couplings:
    layers.append(c)
    if batch_norm:
      layers.append(FlowBatchNorm(momentum=momentum))
  return tuple(layers)


def multiscale_shapes(image_shape: Sequence[int], num_scales: int) -> list[tuple[int, int, int]]:
  """Per-example shapes `(h, w, c)` of the latents factored out at each scale, in order."""
  h, w, c = image_shape
  shapes = []
  for s in range(num_scales - 1):
    if h % 2 or w % 2:
      raise ValueError(
        f"{num_scales} scales need the size to halve {num_scales - 1} times; at scale {s} it is {h}x{w}"
      )
    h, w, c = h // 2, w // 2, 4 * c
    shapes.append((h, w, c - c // 2))
    c = c // 2
  shapes.append((h, w, c))
  return shapes


class MultiScaleFlow(nn.Module):
  """The RealNVP multi-scale architecture on `[B, H, W, C]` images.

  `forward(x, train) -> (z [B, H*W*C], log_det [B])`: the latents factored out at each
  scale, flattened and concatenated in order (`multiscale_shapes`); `inverse(z) -> x`.
  """

  num_scales: int
  features: int
  num_blocks: int
  batch_norm: bool = True
  bn_momentum: float = 0.9
  dtype: Any = None  # the compute dtype (None: the inputs'); parameters are `param_dtype`
  param_dtype: Any = jnp.float32

  def setup(self):
    if self.num_scales < 1:
      raise ValueError(f"num_scales must be >= 1, got {self.num_scales}")
    kw = {"features": self.features, "num_blocks": self.num_blocks}
    kw.update(dtype=self.dtype, param_dtype=self.param_dtype)
    norm = {"batch_norm": self.batch_norm, "momentum": self.bn_momentum}
    self.checker = tuple(
      _with_norm([AffineCoupling("checkerboard", parity=i % 2, **kw) for i in range(3)], **norm)
      for _ in range(self.num_scales - 1)
    )
    self.channel = tuple(
      _with_norm([ChannelCoupling(parity=i % 2, **kw) for i in range(3)], **norm)
      for _ in range(self.num_scales - 1)
    )
    self.final = _with_norm([AffineCoupling("checkerboard", parity=i % 2, **kw) for i in range(4)], **norm)

  def forward(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    b = x.shape[0]
    zs, log_det = [], jnp.zeros((b,), x.dtype)
    for checker, channel in zip(self.checker, self.channel, strict=True):
      x, ld1 = _chain_forward(checker, x, train)
      x, ld2 = _chain_forward(channel, squeeze(x), train)
      c = x.shape[-1] // 2
      zs.append(x[..., c:].reshape(b, -1))
      x, log_det = x[..., :c], log_det + ld1 + ld2
    x, ld = _chain_forward(self.final, x, train)
    zs.append(x.reshape(b, -1))
    return jnp.concatenate(zs, axis=-1), log_det + ld

  def inverse(self, z: jax.Array, image_shape: Sequence[int]) -> jax.Array:
    """`z [B, D]` -> `x [B, H, W, C]` for images of per-example `image_shape`."""
    b = z.shape[0]
    shapes = multiscale_shapes(image_shape, self.num_scales)
    sizes = [math.prod(s) for s in shapes]
    if z.shape[-1] != sum(sizes):
      raise ValueError(f"z has {z.shape[-1]} dimensions; images of shape {tuple(image_shape)} need {sum(sizes)}")
    pieces = jnp.split(z, [sum(sizes[: i + 1]) for i in range(len(sizes) - 1)], axis=-1)
    pieces = [p.reshape((b,) + s) for p, s in zip(pieces, shapes, strict=True)]
    x = _chain_inverse(self.final, pieces[-1])
    for checker, channel, factored in zip(
      reversed(self.checker), reversed(self.channel), reversed(pieces[:-1]), strict=True
    ):
      x = _chain_inverse(channel, jnp.concatenate([x, factored], axis=-1))
      x = _chain_inverse(checker, unsqueeze(x))
    return x


class VectorFlow(nn.Module):
  """Couplings with MLP networks and alternating coordinate masks on `[B, D]` vectors.

  `forward(x, train) -> (z [B, D], log_det [B])`; `inverse(z) -> x`.
  """

  num_couplings: int
  hidden: Sequence[int]
  batch_norm: bool = True
  bn_momentum: float = 0.9
  dtype: Any = None  # the compute dtype (None: the inputs'); parameters are `param_dtype`
  param_dtype: Any = jnp.float32

  def setup(self):
    couplings = [
      AffineCoupling(
        "alternate", parity=i % 2, hidden=tuple(self.hidden), dtype=self.dtype, param_dtype=self.param_dtype
      )
      for i in range(self.num_couplings)
    ]
    self.layers = _with_norm(couplings, self.batch_norm, self.bn_momentum)

  def forward(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    return _chain_forward(self.layers, x, train)

  def inverse(self, z: jax.Array) -> jax.Array:
    return _chain_inverse(self.layers, z)
