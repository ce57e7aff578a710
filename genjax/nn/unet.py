"""The DDPM U-Net (Ho et al. 2020, after PixelCNN++) and a time-conditioned MLP for vectors.

`UNet`: `x [B, H, W, C]`, `t int32[B]` -> `eps [B, H, W, C]`. A 3x3 input conv, then
for each channel multiplier a level of `num_res_blocks` residual blocks (group norm,
swish, conv, + a projection of the time embedding, group norm, swish, dropout,
conv; a 1x1 conv on the skip path where channels change), self-attention after the
blocks of levels whose resolution is in `attn_resolutions`, and a stride-2 conv
between levels; a middle of block-attention-block; the mirror path with one more
block per level, each taking the matching down-path activation concatenated, and
nearest-neighbour upsampling + conv between levels; group norm, swish and a
zero-initialized 3x3 output conv. The time embedding is sinusoidal (`ch` features)
fed through Dense(4 ch)-swish-Dense(4 ch).

Class conditioning (classifier-free guidance, Ho & Salimans 2022): with
`num_classes = K > 0` the network takes `label int32[B]` in `[0, K]` and adds a learned
embedding of it (`K + 1` entries; entry `K` is the "null" label of the unconditional
model) to the time embedding. With `num_classes = 0` (the default) there is no label
input and no extra parameter. `TimeMLP` does the same for vectors.

Inputs whose size is not divisible by `2 ** (levels - 1)` (or smaller than `pad_to`)
are zero-padded symmetrically inside the network and the output is cropped back:
28x28 digits run as 32x32 through a 4-level U-Net while the diffusion process itself
stays on the 28x28 pixels. `attn_resolutions` refer to the padded feature maps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from genjax.nn import conv2d, conv_grads


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
  """Sinusoidal embedding `[B, dim]` of (integer or real) times `t` `[B]`: sin half, then cos half
  (float32: the layers it feeds cast it to their compute dtype)."""
  if dim % 2:
    raise ValueError(f"timestep embedding dim must be even, got {dim}")
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / max(half - 1, 1))
  args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


def upsample_nearest_2x(x: jax.Array) -> jax.Array:
  """Nearest-neighbour 2x upsampling `[B, H, W, C] -> [B, 2H, 2W, C]` by broadcast and reshape.

  The same values as `jax.image.resize(x, (B, 2H, 2W, C), 'nearest')`, whose gather's
  gradient is a scatter-add that XLA:CPU runs element by element; here the gradient is a
  sum over each 2x2 block.
  """
  b, h, w, c = x.shape
  return jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(b, 2 * h, 2 * w, c)


def _groups(channels: int, max_groups: int) -> int:
  """The largest group count <= max_groups that divides `channels`."""
  return max(g for g in range(1, min(max_groups, channels) + 1) if channels % g == 0)


def _norm(channels: int, max_groups: int, name: str, kw: dict) -> nn.GroupNorm:
  """Group norm; its statistics are float32 whatever the compute dtype (Flax computes them in at least
  float32)."""
  return nn.GroupNorm(num_groups=_groups(channels, max_groups), epsilon=1e-6, name=name, **kw)


_zero = nn.initializers.zeros


def _add_label_embedding(temb: jax.Array, label: jax.Array | None, num_classes: int, kw: dict) -> jax.Array:
  """`temb [B, E]` plus a learned embedding `[num_classes + 1, E]` of `label int32[B]` (entry
  `num_classes` = the null label); `temb` itself when `num_classes == 0` (no label, no parameter)."""
  if num_classes <= 0:
    if label is not None:
      raise ValueError("this network is unconditional (num_classes=0) but was given labels")
    return temb
  if label is None or label.shape != temb.shape[:1]:
    got = None if label is None else label.shape
    raise ValueError(f"a class-conditional network needs label int32[{temb.shape[0]}], got {got}")
  return temb + nn.Embed(num_classes + 1, temb.shape[-1], name="label_emb", **kw)(label)


class ResBlock(nn.Module):
  """`[B, H, W, Cin]`, time embedding `[B, E]` -> `[B, H, W, out_ch]`."""

  out_ch: int
  dropout: float = 0.0
  norm_groups: int = 32
  dtype: Any = None  # the compute dtype (None: the inputs'); parameters are `param_dtype`
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, temb, train: bool):
    kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
    h = nn.swish(_norm(x.shape[-1], self.norm_groups, "norm_0", kw)(x))
    h = conv2d.Conv(self.out_ch, (3, 3), name="conv_0", **kw)(h)
    h = h + nn.Dense(self.out_ch, name="temb_proj", **kw)(nn.swish(temb))[:, None, None, :]
    h = nn.swish(_norm(self.out_ch, self.norm_groups, "norm_1", kw)(h))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = conv2d.Conv(self.out_ch, (3, 3), kernel_init=_zero, name="conv_1", **kw)(h)
    if x.shape[-1] != self.out_ch:
      x = conv2d.Conv(self.out_ch, (1, 1), name="skip", **kw)(x)
    return x + h


class AttnBlock(nn.Module):
  """Single-head self-attention over the H*W positions, residual: `[B, H, W, C]` -> same.

  The attention logits and their softmax are float32 whatever the compute dtype."""

  norm_groups: int = 32
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
    b, h, w, c = x.shape
    y = _norm(c, self.norm_groups, "norm", kw)(x)
    q, k, v = (conv_grads.Dense(c, name=n, **kw)(y).reshape(b, h * w, c) for n in ("q", "k", "v"))
    logits = jnp.einsum("bic,bjc->bij", q, k, preferred_element_type=jnp.float32)
    weights = jax.nn.softmax(logits / math.sqrt(c), axis=-1).astype(v.dtype)
    y = jnp.einsum("bij,bjc->bic", weights, v).reshape(b, h, w, c)
    return x + conv_grads.Dense(c, kernel_init=_zero, name="proj_out", **kw)(y)


class UNet(nn.Module):
  """The epsilon network of DDPM: `(x [B, H, W, C], t int32[B], train) -> [B, H, W, C]`.

  `dtype` is the compute dtype (None: float32 inputs compute in float32), `param_dtype`
  the parameters' (group-norm statistics and the attention softmax stay float32; the
  output is in the compute dtype: callers cast it before a loss). `remat` recomputes
  each residual and attention block's activations in the backward pass instead of
  storing them (`flax.linen.remat`): the same values, less memory, more compute.
  """

  ch: int = 128
  ch_mult: Sequence[int] = (1, 2, 2, 2)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.1
  norm_groups: int = 32
  pad_to: int = 0  # pad H and W up to at least this (and to a multiple of 2**(levels-1))
  num_classes: int = 0  # > 0: take `label int32[B]` in [0, num_classes] (num_classes = the null label)
  dtype: Any = None
  param_dtype: Any = jnp.float32
  remat: bool = False

  def padding(self, height: int, width: int) -> tuple[int, int]:
    """The padded `(H, W)` the network runs at."""
    f = 2 ** (len(self.ch_mult) - 1)
    return tuple(max(-(-s // f) * f, -(-self.pad_to // f) * f) for s in (height, width))

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, train: bool = False, label: jax.Array | None = None) -> jax.Array:
    if x.ndim != 4:
      raise ValueError(f"UNet expects x [B, H, W, C], got shape {x.shape}")
    kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
    # `train` decides dropout (Python control flow): static under remat.
    res_block = nn.remat(ResBlock, static_argnums=(3,)) if self.remat else ResBlock
    attn_block = nn.remat(AttnBlock) if self.remat else AttnBlock
    b, height, width, channels = x.shape
    ph, pw = self.padding(height, width)
    top, left = (ph - height) // 2, (pw - width) // 2
    if (ph, pw) != (height, width):
      x = jnp.pad(x, ((0, 0), (top, ph - height - top), (left, pw - width - left), (0, 0)))
    temb = timestep_embedding(t, self.ch)
    temb = nn.Dense(4 * self.ch, name="temb_0", **kw)(temb)
    temb = nn.Dense(4 * self.ch, name="temb_1", **kw)(nn.swish(temb))
    temb = _add_label_embedding(temb, label, self.num_classes, kw)

    def res(h, out_ch, name):
      return res_block(out_ch, self.dropout, self.norm_groups, name=name, **kw)(h, temb, train)

    def attn(h, name):
      return attn_block(self.norm_groups, name=name, **kw)(h)

    h = conv2d.Conv(self.ch, (3, 3), name="conv_in", **kw)(x)  # few input channels: im2col
    skips = [h]
    levels = len(self.ch_mult)
    for i, mult in enumerate(self.ch_mult):
      for j in range(self.num_res_blocks):
        h = res(h, self.ch * mult, f"down_{i}_res_{j}")
        if h.shape[1] in self.attn_resolutions:
          h = attn(h, f"down_{i}_attn_{j}")
        skips.append(h)
      if i != levels - 1:
        h = conv2d.Conv(h.shape[-1], (3, 3), strides=(2, 2), name=f"down_{i}_downsample", **kw)(h)
        skips.append(h)
    h = res(h, h.shape[-1], "mid_res_0")
    h = attn(h, "mid_attn")
    h = res(h, h.shape[-1], "mid_res_1")
    for i in reversed(range(levels)):
      for j in range(self.num_res_blocks + 1):
        h = res(jnp.concatenate([h, skips.pop()], axis=-1), self.ch * self.ch_mult[i], f"up_{i}_res_{j}")
        if h.shape[1] in self.attn_resolutions:
          h = attn(h, f"up_{i}_attn_{j}")
      if i != 0:
        h = upsample_nearest_2x(h)
        h = conv2d.Conv(h.shape[-1], (3, 3), name=f"up_{i}_upsample", **kw)(h)
    assert not skips
    h = nn.swish(_norm(h.shape[-1], self.norm_groups, "norm_out", kw)(h))
    h = conv2d.Conv(channels, (3, 3), kernel_init=_zero, name="conv_out", **kw)(h)  # few outputs: tap responses
    return h[:, top : top + height, left : left + width, :]


class TimeMLP(nn.Module):
  """Epsilon network for vectors: `(x [B, D], t int32[B], train, label) -> [B, D]`.

  The sinusoidal embedding of `t` goes through Dense-swish-Dense (plus the label
  embedding when `num_classes > 0`, as in `UNet`) and is added to every hidden layer
  (Dense, + time projection, swish). `dtype`, `param_dtype` as in `UNet`.
  """

  hidden: Sequence[int] = (128, 128, 128)
  temb_dim: int = 64
  num_classes: int = 0  # > 0: take `label int32[B]` in [0, num_classes] (num_classes = the null label)
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, train: bool = False, label: jax.Array | None = None) -> jax.Array:
    kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
    temb = timestep_embedding(t, self.temb_dim)
    temb = nn.Dense(self.temb_dim, name="temb_1", **kw)(
      nn.swish(nn.Dense(self.temb_dim, name="temb_0", **kw)(temb))
    )
    temb = _add_label_embedding(temb, label, self.num_classes, kw)
    h = x
    for i, width in enumerate(self.hidden):
      h = nn.Dense(width, name=f"dense_{i}", **kw)(h) + nn.Dense(width, name=f"temb_proj_{i}", **kw)(temb)
      h = nn.swish(h)
    return nn.Dense(x.shape[-1], kernel_init=_zero, name="dense_out", **kw)(h)
