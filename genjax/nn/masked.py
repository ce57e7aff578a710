"""Masked convolutions and the autoregressive PixelCNN / Gated PixelCNN networks.

Follows van den Oord et al. 2016, "Pixel Recurrent Neural Networks" and "Conditional
Image Generation with PixelCNN Decoders".

Ordering. Pixels are visited in raster order (row by row, left to right); within a
pixel the colour channels come in order (R, G, B for C = 3). The logits for (pixel p,
channel c) depend only on input values at pixels before p and, at p, on channels < c.

Channel groups. Every feature map with F channels is split into C = num_color_channels
*contiguous* blocks: feature channel i belongs to colour group `i * C // F` (so F must
be divisible by C; a raw image with F = C has channel c in group c). At the centre tap
a type 'A' mask connects input group g_in to output group g_out only if g_in < g_out,
type 'B' if g_in <= g_out. The networks' last layer has C * num_logits channels, so
reshaping it to `[..., C, num_logits]` gives colour channel c exactly the channels of
group c.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _check_kernel(kernel_size: Sequence[int]) -> tuple[int, int]:
  kh, kw = (int(k) for k in kernel_size)
  if kh < 1 or kw < 1 or kh % 2 == 0 or kw % 2 == 0:
    raise ValueError(f"masked conv kernel sizes must be odd and positive, got {kh}x{kw}")
  return kh, kw


def _check_groups(channels: int, num_color_channels: int, what: str) -> None:
  if num_color_channels < 1:
    raise ValueError(f"num_color_channels must be >= 1, got {num_color_channels}")
  if channels < 1 or channels % num_color_channels:
    raise ValueError(
      f"{what} = {channels} is not divisible by num_color_channels = {num_color_channels}: "
      f"masked convs split channels into {num_color_channels} equal contiguous colour groups"
    )


def color_groups(channels: int, num_color_channels: int) -> np.ndarray:
  """Colour group of each of `channels` feature channels: `int[channels]` (contiguous blocks)."""
  _check_groups(channels, num_color_channels, "channels")
  return np.arange(channels) * num_color_channels // channels


def mask(
  kernel_size: Sequence[int], in_channels: int, out_channels: int, mask_type: str, num_color_channels: int = 1
) -> np.ndarray:
  """Causal mask for an HWIO conv kernel: float32 `[kh, kw, in_channels, out_channels]`.

  Rows above the centre are 1, the centre row is 1 left of the centre and 0 right of it,
  rows below are 0. The centre tap connects colour groups as the mask type says
  ('A': g_in < g_out, for the first layer that sees the image; 'B': g_in <= g_out).
  A `(1, k)` kernel gives the horizontal (current-row) mask of the Gated PixelCNN.
  """
  if mask_type not in ("A", "B"):
    raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
  kh, kw = _check_kernel(kernel_size)
  _check_groups(in_channels, num_color_channels, "in_channels")
  _check_groups(out_channels, num_color_channels, "out_channels")
  m = np.zeros((kh, kw, in_channels, out_channels), np.float32)
  ch, cw = kh // 2, kw // 2
  m[:ch] = 1.0
  m[ch, :cw] = 1.0
  g_in = color_groups(in_channels, num_color_channels)[:, None]
  g_out = color_groups(out_channels, num_color_channels)[None, :]
  m[ch, cw] = (g_in < g_out) if mask_type == "A" else (g_in <= g_out)
  return m


def vertical_mask(
  kernel_size: Sequence[int], in_channels: int, out_channels: int, include_centre_row: bool
) -> np.ndarray:
  """Vertical-stack mask: float32 `[kh, kw, in, out]`, 1 on rows above the centre.

  With `include_centre_row` the whole centre row is 1 as well (allowed once the input
  itself only depends on rows strictly above, i.e. after the first layer).
  """
  kh, kw = _check_kernel(kernel_size)
  m = np.zeros((kh, kw, in_channels, out_channels), np.float32)
  m[: kh // 2 + int(include_centre_row)] = 1.0
  return m


_DN = ("NHWC", "HWIO", "NHWC")
# Widest residual stream (features) for which `PixelCNN` computes channel-major by default (measured).
CHANNEL_MAJOR_MAX = 128


def masked_conv(x: jax.Array, kernel: jax.Array, m: np.ndarray) -> jax.Array:
  """SAME convolution of `x` `[B, H, W, Cin]` with `kernel * m` (HWIO), no bias.

  Computed over only the kernel rows and columns where the mask `m` (a numpy array,
  `kernel`'s shape) has a non-zero entry: a type-B 3x3 mask needs 2 x 3 taps, a type-A
  7x7 one 4 x 7, a first-layer vertical-stack one its 3 top rows, a type-A 1 x 7
  horizontal one (single colour channel) 1 x 3; the padding is shifted to match (it may
  be negative: rows past the kernel's last used row are cropped). A remaining 1 x 1
  kernel at the centre is a matrix product over channels. The mask still multiplies the
  cropped kernel where it has zeros inside the crop (the centre row's right half, the
  centre tap's colour groups). The same linear map as the full masked kernel (equal up
  to float rounding: fewer terms are summed), with the same, exactly zero, gradient for
  every masked-out kernel entry. On XLA:CPU this avoids the multiplications by zero and
  the slow convolution weight-gradients of 1 x 1 kernels (`benchmarks`, README).
  """
  kh, kw = m.shape[:2]
  rows = np.flatnonzero(m.any(axis=(1, 2, 3)))
  cols = np.flatnonzero(m.any(axis=(0, 2, 3)))
  if rows.size == 0:
    return jnp.zeros(x.shape[:-1] + (m.shape[-1],), x.dtype)
  r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
  mc = m[r0:r1, c0:c1]
  kc = kernel[r0:r1, c0:c1]
  if not mc.all():
    kc = kc * jnp.asarray(mc, kernel.dtype)
  if kc.shape[:2] == (1, 1) and (r0, c0) == (kh // 2, kw // 2):
    return jnp.dot(x, kc[0, 0])
  padding = ((kh // 2 - r0, r1 - 1 - kh // 2), (kw // 2 - c0, c1 - 1 - kw // 2))
  return jax.lax.conv_general_dilated(x, kc, (1, 1), padding, dimension_numbers=_DN)


def _shift_cm(x: jax.Array, dy: int, dx: int) -> jax.Array:
  """`out[:, :, h, w] = x[:, :, h + dy, w + dx]` of `x [C, B, H, W]`, zero outside `x`."""
  zero = jnp.zeros((), x.dtype)
  return jax.lax.pad(x, zero, ((0, 0, 0), (0, 0, 0), (-dy, dy, 0), (-dx, dx, 0)))  # negative edges crop


def masked_conv_cm(x: jax.Array, kernel: jax.Array, m: np.ndarray) -> jax.Array:
  """`masked_conv` in channel-major layout: `x [Cin, B, H, W]` -> `[Cout, B, H, W]`, the
  kernel still HWIO `[kh, kw, Cin, Cout]` with its mask `m`.

  Computed as one matrix product over the taps where the mask has a non-zero entry
  (im2col): the T shifted copies of `x` stacked into `[T Cin, B H W]`, multiplied by
  the masked kernel slices `[Cout, T Cin]` (a centre 1 x 1 tap alone is the product
  with `x` itself). Pixels are the minor axis of every product here, forward and
  backward: the weight gradient contracts them as the last axis of both operands, so
  XLA:CPU needs no transposes of the activations, which the NHWC convolution's weight
  gradient with 16-32 channels spends most of its time on (README, benchmark section).
  The same linear map as `masked_conv` up to float rounding, with exactly zero
  gradients for masked-out kernel entries.
  """
  kh, kw = m.shape[:2]
  cin, cout = m.shape[2:]
  taps = [(i, j) for i in range(kh) for j in range(kw) if m[i, j].any()]
  if not taps:
    return jnp.zeros((cout,) + x.shape[1:], x.dtype)

  def tap(i, j):
    k = kernel[i, j]
    return k if m[i, j].all() else k * jnp.asarray(m[i, j], kernel.dtype)

  flat = x.reshape(cin, -1)
  if taps == [(kh // 2, kw // 2)]:
    y = jnp.dot(tap(*taps[0]).T, flat)
  else:
    cols = jnp.concatenate([_shift_cm(x, i - kh // 2, j - kw // 2) for i, j in taps], axis=0)
    w = jnp.concatenate([tap(i, j) for i, j in taps], axis=0)  # [T Cin, Cout], tap-major as `cols`
    y = jnp.dot(w.T, cols.reshape(len(taps) * cin, -1))
  return y.reshape((cout,) + x.shape[1:])


def _conv(module: nn.Module, x: jax.Array, m: np.ndarray, channel_major: bool = False) -> jax.Array:
  """`masked_conv` (or `masked_conv_cm`) with a kernel param `[kh, kw, Cin, Cout]` (lecun-normal
  over the full kernel shape, masked entries included) and a bias param `[Cout]`."""
  kernel = module.param("kernel", nn.initializers.lecun_normal(), m.shape, module.param_dtype)
  bias = module.param("bias", nn.initializers.zeros_init(), (m.shape[-1],), module.param_dtype)
  x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=module.dtype)
  if channel_major:
    return masked_conv_cm(x, kernel, m) + bias[:, None, None, None]
  return masked_conv(x, kernel, m) + bias


class MaskedConv(nn.Module):
  """Conv whose kernel is multiplied by `mask(...)`; `[B, H, W, Cin] -> [B, H, W, features]`."""

  features: int
  kernel_size: Sequence[int]
  mask_type: str
  num_color_channels: int = 1
  dtype: Any = None  # the compute dtype (None: the inputs'); parameters are `param_dtype`
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    m = mask(self.kernel_size, x.shape[-1], self.features, self.mask_type, self.num_color_channels)
    return _conv(self, x, m)


class MaskedConvCM(MaskedConv):
  """`MaskedConv` on channel-major activations: `[Cin, B, H, W] -> [features, B, H, W]`, with
  the same attributes and parameters (`kernel [kh, kw, Cin, features]` HWIO, `bias [features]`)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    m = mask(self.kernel_size, x.shape[0], self.features, self.mask_type, self.num_color_channels)
    return _conv(self, x, m, channel_major=True)


class VerticalConv(nn.Module):
  """Vertical-stack conv: sees only rows above (and, optionally, the current row).

  `[B, H, W, Cin] -> [B, H, W, features]`.
  """

  features: int
  kernel_size: Sequence[int]
  include_centre_row: bool
  dtype: Any = None  # the compute dtype (None: the inputs'); parameters are `param_dtype`
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    m = vertical_mask(self.kernel_size, x.shape[-1], self.features, self.include_centre_row)
    return _conv(self, x, m)


def gate(x: jax.Array, num_color_channels: int) -> jax.Array:
  """Gated activation tanh(a) * sigmoid(b) that keeps colour groups.

  `[..., 2F] -> [..., F]`: each colour group's block of 2F/C channels is split in half
  (a, b), so output group g only uses pre-activations of group g.
  """
  c = num_color_channels
  y = x.reshape(x.shape[:-1] + (c, x.shape[-1] // c))
  a, b = jnp.split(y, 2, axis=-1)
  out = jnp.tanh(a) * jax.nn.sigmoid(b)
  return out.reshape(x.shape[:-1] + (x.shape[-1] // 2,))


def _check_label(label: jax.Array | None, num_classes: int) -> None:
  if num_classes > 0 and label is None:
    raise ValueError(f"this network is conditional (num_classes = {num_classes}); pass label")
  if num_classes == 0 and label is not None:
    raise ValueError("this network is unconditional (num_classes = 0); it takes no label")


def _check_inputs(x: jax.Array, label: jax.Array | None, num_classes: int, num_color_channels: int) -> None:
  _check_label(label, num_classes)
  if x.shape[-1] != num_color_channels:
    raise ValueError(f"x has {x.shape[-1]} channels, num_color_channels = {num_color_channels}")


def _label_bias(label: jax.Array | None, num_classes: int, width: int, name: str, kw: dict):
  """A learned per-class bias `[B, 1, 1, width]` (0 without a label); call inside a compact method."""
  if label is None:
    return 0.0
  return nn.Embed(num_classes, width, name=name, **kw)(label)[:, None, None, :]


def _to_logits(h: jax.Array, num_color_channels: int, num_logits: int, kw: dict) -> jax.Array:
  """Output head: relu -> 1x1 B -> relu -> 1x1 B, `[B, H, W, F] -> [B, H, W, C, num_logits]`.

  Call inside a compact method: creates the submodules `out_hidden` and `out_logits`.
  """
  c = num_color_channels
  hidden = MaskedConv(h.shape[-1], (1, 1), "B", c, name="out_hidden", **kw)
  logits = MaskedConv(c * num_logits, (1, 1), "B", c, name="out_logits", **kw)
  return _head(h, hidden, logits, c, num_logits)


def _head(h: jax.Array, hidden: nn.Module, logits: nn.Module, c: int, num_logits: int) -> jax.Array:
  h = logits(nn.relu(hidden(nn.relu(h))))
  # Channel c * num_logits + l lies in colour group c (contiguous groups).
  return h.reshape(h.shape[:-1] + (c, num_logits))


class PixelCNN(nn.Module):
  """Plain PixelCNN: 7x7 type-A conv, residual blocks of type-B convs, 1x1 output head.

  Each residual block is relu -> 1x1 (features // 2) -> relu -> kxk -> relu -> 1x1 back
  to `features`, added to its input. Has the classic blind spot (see the tests).

  Attributes:
    features: width of the residual stream; divisible by 2 * num_color_channels.
    num_blocks: number of residual blocks.
    num_logits: logits per sub-pixel (256 for an 8-bit softmax, 1 for Bernoulli).
    num_color_channels: C of the images.
    num_classes: 0 for unconditional; else a learned label embedding is added to the
      input-layer output and to the input of every block.
    channel_major: compute on channel-major activations `[F, B, H, W]` (`MaskedConvCM`)
      instead of NHWC; the same parameters and the same function to float rounding. None
      picks it for streams of at most `CHANNEL_MAJOR_MAX` features, where it is faster
      on XLA:CPU (measured: README, benchmark section).
  Shapes: x float `[B, H, W, C]` (scaled by the caller, e.g. to [-1, 1]), label
    int `[B]` -> logits `[B, H, W, C, num_logits]`.
  """

  features: int = 96
  num_blocks: int = 6
  num_logits: int = 256
  num_color_channels: int = 1
  num_classes: int = 0
  kernel_size: int = 3
  first_kernel_size: int = 7
  channel_major: bool | None = None  # activations [F, B, H, W] inside; None: when features <= CHANNEL_MAJOR_MAX
  dtype: Any = None  # the compute dtype (None: the inputs'); parameters are `param_dtype`
  param_dtype: Any = jnp.float32

  @property
  def context(self) -> int:
    """Reach in pixels: the logits at (i, j) depend only on inputs in rows i - context .. i
    and columns j - context .. j + context (the 7x7 input layer plus one k x k step per block)."""
    return self.first_kernel_size // 2 + self.num_blocks * (self.kernel_size // 2)

  @nn.compact
  def __call__(self, x: jax.Array, label: jax.Array | None = None) -> jax.Array:
    c, f = self.num_color_channels, self.features
    kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
    _check_inputs(x, label, self.num_classes, c)
    if f % (2 * c):
      raise ValueError(
        f"features = {f} must be divisible by 2 * num_color_channels = {2 * c} (the "
        f"blocks' bottleneck of features // 2 channels is split into colour groups)"
      )

    cm = self.channel_major if self.channel_major is not None else f <= CHANNEL_MAJOR_MAX
    conv = MaskedConvCM if cm else MaskedConv

    def cond(name):
      bias = _label_bias(label, self.num_classes, f, name, kw)  # [B, 1, 1, f] or 0
      return jnp.moveaxis(bias, -1, 0) if cm and label is not None else bias

    k = self.kernel_size
    h = conv(f, (self.first_kernel_size,) * 2, "A", c, name="conv_in", **kw)(jnp.moveaxis(x, -1, 0) if cm else x)
    h = h + cond("embed_in")
    for i in range(self.num_blocks):
      r = nn.relu(h + cond(f"embed_{i}"))
      r = nn.relu(conv(f // 2, (1, 1), "B", c, name=f"block_{i}_in", **kw)(r))
      r = nn.relu(conv(f // 2, (k, k), "B", c, name=f"block_{i}_conv", **kw)(r))
      h = h + conv(f, (1, 1), "B", c, name=f"block_{i}_out", **kw)(r)
    if not cm:
      return _to_logits(h, c, self.num_logits, kw)
    h = nn.relu(conv(f, (1, 1), "B", c, name="out_hidden", **kw)(nn.relu(h)))
    # The logits layer stays channel-major while it is no wider than the stream (Bernoulli: 1
    # channel); a wide one (a 256-way softmax) runs on the stream moved back to NHWC, so that
    # the one transpose is of `f` channels rather than of C * num_logits.
    wide = c * self.num_logits > f
    out = (MaskedConv if wide else MaskedConvCM)(c * self.num_logits, (1, 1), "B", c, name="out_logits", **kw)
    h = out(jnp.moveaxis(h, 0, -1)) if wide else jnp.moveaxis(out(h), 0, -1)
    return h.reshape(h.shape[:-1] + (c, self.num_logits))


class GatedPixelCNN(nn.Module):
  """Gated PixelCNN with vertical and horizontal stacks (no blind spot).

  Layer 0 uses `first_kernel_size` (7): the vertical stack sees the k//2 rows strictly
  above the pixel (k wide), the horizontal stack the k//2 pixels to its left plus the
  current pixel's earlier colour groups (type A). Later layers use `kernel_size`: the
  vertical conv also sees its own row (its input already only depends on rows above),
  the horizontal conv (1 x k, type B) its row up to and including the pixel. The
  vertical pre-activations feed the horizontal ones through an unmasked 1x1 (they only
  depend on rows above, so any channel may use them); the horizontal stack has a 1x1
  type-B conv and a residual connection (from layer 1 on).

  The two stacks are also callable on their own (`vertical`, `horizontal`; `__call__`
  is `horizontal(x, vertical(x))`), which the cached sampler uses: the vertical stack
  of a row is computed once per row, the horizontal stack once per position.

  Attributes:
    features: width of both stacks; divisible by num_color_channels.
    num_layers: gated layers, including the first one.
    num_logits, num_color_channels, num_classes: as in `PixelCNN`; the label embedding
      (one per layer and stack, 2 * features wide) is a bias inside every gate.
  Shapes: x float `[B, H, W, C]`, label int `[B]` -> logits `[B, H, W, C, num_logits]`.
  """

  features: int = 96
  num_layers: int = 8
  num_logits: int = 256
  num_color_channels: int = 1
  num_classes: int = 0
  kernel_size: int = 3
  first_kernel_size: int = 7
  dtype: Any = None  # the compute dtype (None: the inputs'); parameters are `param_dtype`
  param_dtype: Any = jnp.float32

  @property
  def context(self) -> int:
    """Reach in pixels: the logits at (i, j) depend only on inputs in rows i - context .. i
    and columns j - context .. j + context (vertical stack: rows above, both sides;
    horizontal stack: the current row, to the left)."""
    return self.first_kernel_size // 2 + (self.num_layers - 1) * (self.kernel_size // 2)

  def setup(self):
    c, f = self.num_color_channels, self.features
    kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
    _check_groups(f, c, "features")
    ks = [self.first_kernel_size] + [self.kernel_size] * (self.num_layers - 1)
    # Lists of submodules are named v_conv_0, v_conv_1, ... (the parameter tree of the
    # earlier compact version of this module, so checkpoints stay loadable).
    self.v_conv = [VerticalConv(2 * f, (k, k), include_centre_row=i > 0, **kw) for i, k in enumerate(ks)]
    self.h_conv = [MaskedConv(2 * f, (1, k), "A" if i == 0 else "B", c, **kw) for i, k in enumerate(ks)]
    self.v_to_h = [nn.Dense(2 * f, **kw) for _ in ks]
    self.h_out = [MaskedConv(f, (1, 1), "B", c, **kw) for _ in ks]
    if self.num_classes:
      self.v_embed = [nn.Embed(self.num_classes, 2 * f, **kw) for _ in ks]
      self.h_embed = [nn.Embed(self.num_classes, 2 * f, **kw) for _ in ks]
    self.out_hidden = MaskedConv(f, (1, 1), "B", c, **kw)
    self.out_logits = MaskedConv(c * self.num_logits, (1, 1), "B", c, **kw)

  def _cond(self, embeds: str, i: int, label: jax.Array | None):
    """Layer i's label bias `[B, 1, 1, 2F]` from `self.<embeds>` (0 without a label)."""
    if label is None:
      return 0.0
    return getattr(self, embeds)[i](label)[:, None, None, :]

  def vertical(self, x: jax.Array, label: jax.Array | None = None) -> tuple[jax.Array, ...]:
    """Vertical-stack pre-activations of every layer: `num_layers` arrays `[B, H, W, 2F]`.

    Row i of each depends only on rows < i of `x`.
    """
    c = self.num_color_channels
    _check_inputs(x, label, self.num_classes, c)
    v, pres = x, []
    for i in range(self.num_layers):
      v_pre = self.v_conv[i](v) + self._cond("v_embed", i, label)
      pres.append(v_pre)
      v = gate(v_pre, c)
    return tuple(pres)

  def horizontal(self, x: jax.Array, v_pres: Sequence[jax.Array], label: jax.Array | None = None) -> jax.Array:
    """Horizontal stack and output head: logits `[B, H, W, C, num_logits]`.

    `v_pres` are `vertical(...)`'s outputs at the same pixels as `x`; the logits at
    (i, j) use row i of `x` up to column j and `v_pres` at (i, j) only.
    """
    c = self.num_color_channels
    _check_inputs(x, label, self.num_classes, c)
    h = x
    for i in range(self.num_layers):
      h_pre = self.h_conv[i](h) + self.v_to_h[i](v_pres[i]) + self._cond("h_embed", i, label)
      h_out = self.h_out[i](gate(h_pre, c))
      h = h_out if i == 0 else h + h_out
    return _head(h, self.out_hidden, self.out_logits, c, self.num_logits)

  def __call__(self, x: jax.Array, label: jax.Array | None = None) -> jax.Array:
    return self.horizontal(x, self.vertical(x, label), label)
