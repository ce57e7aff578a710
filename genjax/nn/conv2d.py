"""2-D convolution in the form XLA:CPU runs fastest for its shape: the same linear map as
`lax.conv_general_dilated` (NHWC, HWIO), and a drop-in for `flax.linen.Conv`.

A convolution with very few input or output channels (an image's 1-3 channels in, a
flow's 2-8 channels out) has little work per pixel, and XLA:CPU's convolution kernels
run such shapes badly: YNNPACK, which takes convolutions with more than 16 channels on
either side, reached 0.7-5 GFLOP/s on RealNVP's 64 -> 2 and 1 -> 64 convolutions at
28x28, forward and backward (README, benchmark section). Two exact reformulations turn
them into matrix products, which run well at any shape:

* narrow input (`K_h K_w C_in <= NARROW`): im2col. Gather the `K_h K_w C_in` input values
  each output pixel reads (`patches [B, Ho, Wo, K_h K_w C_in]`, cheap when that is small)
  and multiply by the kernel `[K_h K_w C_in, C_out]`. A bias rides in the same product, as
  a column of ones in the patches and a row of the kernel, so no pass over the output adds
  it and its gradient comes out of the weight gradient's product.
* narrow output (`K_h K_w C_out <= NARROW`): tap responses. Multiply every input pixel by
  every tap's kernel slice at once (`x @ W`, `W [C_in, K_h K_w C_out]`: one product per
  pixel and tap) and sum, for each output pixel, the responses of the taps that reach it
  (shifted slices). Stride 1 only.

The gradients are autodiff's transposes of these products: matmuls plus gathers of
shifted slices. Other shapes keep XLA's convolution, whose weight gradient runs as a CPU
kernel and whose strided input gradient runs by phases where `genjax.nn.conv_grads`
measured those faster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.linear import default_kernel_init
from jax import lax

from genjax.nn import conv_grads

DN = ("NHWC", "HWIO", "NHWC")
# Patch or tap-response width (values per pixel) up to which the matmul forms are used (measured).
NARROW = 64


def _pads(size: int, kernel: int, stride: int, padding) -> tuple[int, int]:
  if padding == "SAME":
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2
  if padding == "VALID":
    return 0, 0
  return int(padding[0]), int(padding[1])


def _shifted(x: jax.Array, offsets: Sequence[int], strides: Sequence[int], out: Sequence[int]) -> jax.Array:
  """`x[:, o_h + s_h i, o_w + s_w j]` for `i < out_h, j < out_w`, zero where it falls outside `x`."""
  cfg = [(0, 0, 0)]
  for off, n, s, m in zip(offsets, x.shape[1:3], strides, out, strict=True):
    need = off + s * (m - 1) + 1  # one past the last index read
    cfg.append((-off, need - n, 0))
  xp = lax.pad(x, jnp.zeros((), x.dtype), cfg + [(0, 0, 0)])  # negative edges crop
  return xp[:, :: strides[0], :: strides[1]] if any(s > 1 for s in strides) else xp


def _out_size(x_shape, kernel_shape, strides, pads) -> list[int]:
  """The output's spatial size `[Ho, Wo]`."""
  return [
    (n + lo + hi - k) // s + 1
    for n, k, s, (lo, hi) in zip(x_shape[1:3], kernel_shape[:2], strides, pads, strict=True)
  ]


def split_taps(t: jax.Array, axis: int) -> list[jax.Array]:
  """`[t[..., k, ...] for k]` along `axis` (dropped), from one `lax.split`.

  Its transpose, in the backward pass, is one concatenate of the pieces' gradients, where
  indexing each tap transposes to one zero-padded full-size array per tap, all summed
  (measured with `op_report --trace`: 173 ms of the DCGAN-64 step in the transposed
  convolutions' col2im, and 5.4 ms per 28x28 coupling head in RealNVP's tap responses).
  """
  return [lax.squeeze(p, (axis,)) for p in lax.split(t, [1] * t.shape[axis], axis=axis)]


def conv_im2col(x, kernel, strides, pads, bias=None) -> jax.Array:
  """The convolution as `patches @ kernel` (narrow input), plus `bias` if given."""
  kh, kw, cin, cout = kernel.shape
  out = _out_size(x.shape, kernel.shape, strides, pads)
  cols = [
    _shifted(x, (i - pads[0][0], j - pads[1][0]), strides, out) for i in range(kh) for j in range(kw)
  ]  # tap-major, as the kernel's HWI order
  w = kernel.reshape(kh * kw * cin, cout)
  if bias is not None:
    cols.append(jnp.ones((*cols[0].shape[:3], 1), x.dtype))
    w = jnp.concatenate([w, bias[None].astype(w.dtype)], axis=0)
  patches = jnp.concatenate(cols, axis=-1) if len(cols) > 1 else cols[0]
  y = jnp.dot(patches.reshape(-1, w.shape[0]), w)
  return y.reshape(x.shape[0], *out, cout)


def conv_taps(x, kernel, pads) -> jax.Array:
  """The stride-1 convolution as summed shifted tap responses `x @ W` (narrow output)."""
  kh, kw, cin, cout = kernel.shape
  out = _out_size(x.shape, kernel.shape, (1, 1), pads)
  w = jnp.moveaxis(kernel, 2, 0).reshape(cin, kh * kw * cout)
  pieces = split_taps(jnp.dot(x.reshape(-1, cin), w).reshape(*x.shape[:3], kh * kw, cout), axis=3)
  return sum_tap_responses(pieces, (kh, kw), pads, out)


def sum_tap_responses(
  pieces: Sequence[jax.Array], kernel_size: Sequence[int], pads, out: Sequence[int]
) -> jax.Array:
  """A stride-1 convolution's output from its taps' responses: `pieces[i * K_w + j] [B, H, W, C]`
  (every input pixel times tap (i, j)'s kernel slice), each shifted to the output pixels it
  reaches and summed -> `[B, *out, C]`."""
  kh, kw = kernel_size
  y = None
  for i in range(kh):
    for j in range(kw):
      s = _shifted(pieces[i * kw + j], (i - pads[0][0], j - pads[1][0]), (1, 1), out)
      y = s if y is None else y + s
  return y


def conv2d(
  x: jax.Array,
  kernel: jax.Array,
  strides: Sequence[int] = (1, 1),
  padding: str | Sequence[tuple[int, int]] = "SAME",
  bias: jax.Array | None = None,
) -> jax.Array:
  """`lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))`
  (plus `bias [O]` if given) in the form the module docstring picks.
  `x [B, H, W, C]`, `kernel [KH, KW, C, O]` -> `[B, Ho, Wo, O]`."""
  if x.ndim != 4 or kernel.ndim != 4 or kernel.shape[2] != x.shape[-1] or len(strides) != 2:
    raise ValueError(
      f"conv2d needs x [B, H, W, C], kernel [KH, KW, C, O] and 2 strides; "
      f"got x {x.shape}, kernel {kernel.shape}, strides {tuple(strides)}"
    )
  if isinstance(padding, str) and padding not in ("SAME", "VALID"):
    raise ValueError(f"padding must be 'SAME', 'VALID' or (low, high) pairs, got {padding!r}")
  kh, kw, cin, cout = kernel.shape
  strides = tuple(int(s) for s in strides)
  pad_spec = [padding, padding] if isinstance(padding, str) else list(padding)
  pads = tuple(_pads(n, k, s, p) for n, k, s, p in zip(x.shape[1:3], (kh, kw), strides, pad_spec, strict=True))
  if min(_out_size(x.shape, kernel.shape, strides, pads)) <= 0:
    raise ValueError(f"conv2d of {x.shape} with kernel {kernel.shape}, strides {strides}, padding {pads} is empty")
  if kh * kw * cin <= NARROW and kh * kw > 1:
    return conv_im2col(x, kernel, strides, pads, bias)
  if kh * kw * cout <= NARROW and strides == (1, 1) and kh * kw > 1:
    y = conv_taps(x, kernel, pads)
  else:
    y = conv_grads.conv(x, kernel, strides, pads)  # XLA's convolution; its gradients as measured fastest
  return y if bias is None else y + bias


class Conv(nn.Module):
  """Drop-in for `flax.linen.Conv` with 2 spatial dims, one batch axis, 'SAME' / 'VALID' / explicit
  padding, no dilation and one feature group, computed by `conv2d`.

  `[B, H, W, Cin]` -> `[B, Ho, Wo, features]`; params `kernel [*kernel_size, Cin, features]` and
  `bias [features]`, created and initialized as Flax creates them.
  """

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] | None = None
  padding: str | Sequence[tuple[int, int]] = "SAME"
  use_bias: bool = True
  kernel_init: nn.initializers.Initializer = default_kernel_init
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
  dtype: Any = None  # the compute dtype (None: inferred from the inputs and parameters, as Flax does)
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 4 or len(self.kernel_size) != 2:
      raise ValueError(f"Conv expects x [B, H, W, C] and a 2-D kernel; got x {x.shape}, kernel {self.kernel_size}")
    kernel_shape = tuple(self.kernel_size) + (x.shape[-1], self.features)
    kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    return conv2d(x, kernel, tuple(self.strides) if self.strides is not None else (1, 1), self.padding, bias)
