"""Transposed convolution in the forms XLA:CPU runs fast: the same linear map as
`lax.conv_transpose`, with phase convolutions forward and matmuls for the gradients.

A stride-`s` transposed convolution is a convolution of the input dilated by `s`
(zeros between the pixels): `y[o] = sum_k xd[o + k - lo] w[k]`. XLA:CPU runs its weight
gradient (a base-dilated convolution with a reversed window) on a generic loop at
0.2-1.4 GFLOP/s, 10-100x slower than anything else in a DCGAN step. Two exact
reformulations avoid it:

* Phases. Split the output by phase `o = s q + r`: only the taps `k = k0(r), k0(r) + s, ...`
  meet real input pixels, at consecutive input offsets. So each of the `s^d` phases is
  an ordinary stride-1 convolution of the undilated input with the sub-kernel
  `w[k0(r)::s]`, and the output is the phases interleaved (depth to space). For 4x4
  stride-2 kernels every phase is a 2x2 convolution: the dilated form's multiply-adds
  without its zeros.
* Matmul + col2im. `t = x @ W` with `W [Cin, K^d Cout]` (every tap's response at every
  input pixel), then each output pixel sums the responses of its taps (shifted slices of
  `t`). Its transpose, which reverse-mode autodiff builds, is a gather of shifted slices
  and two matmuls: `t_bar @ W^T` (input gradient) and `x^T @ t_bar` (weight gradient).

Measured on the DCGAN's and the conv VAE's layers (README, benchmark section): the matmul
form's input and weight gradients are the fastest of the three forms at every layer;
the phase form's forward is the fastest where the output has >= `PHASE_MIN_FEATURES`
channels, the matmul form's below (a convolution with 1-16 output channels runs badly).
So `conv_transpose` computes its value in the faster forward form and defines its
derivative (a `jax.custom_jvp`, so forward-mode `jacfwd` works too) by the matmul form,
whose transpose gives the gradients.

`ConvTranspose` is a drop-in for `flax.linen.ConvTranspose` with the options genjax
uses (1-3 spatial dims, one batch axis, integer strides, 'SAME' / 'VALID' / explicit
padding, no kernel dilation, `transpose_kernel=False`): the same parameter names,
shapes and initializers, so configs and checkpoints are unchanged.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.linear import default_kernel_init
from jax import lax
from jax.custom_derivatives import SymbolicZero

from genjax.nn.conv2d import split_taps

# Output channels from which the forward value is computed by phase convolutions (measured).
PHASE_MIN_FEATURES = 32


def transpose_padding(kernel: int, stride: int, padding: str) -> tuple[int, int]:
  """The (low, high) padding of the dilated input that `lax.conv_transpose` uses for a padding string."""
  if padding == "SAME":
    total = kernel + stride - 2
    low = kernel - 1 if stride > kernel - 1 else -(-total // 2)
  elif padding == "VALID":
    total = kernel + stride - 2 + max(kernel - stride, 0)
    low = kernel - 1
  else:
    raise ValueError(f"padding must be 'SAME', 'VALID' or (low, high) pairs, got {padding!r}")
  return low, total - low


def _plan(n: int, k: int, s: int, low: int, high: int):
  """One spatial dimension: `(n_out, m, phases)`; `m = ceil(n_out / s)` is the phase length and
  `phases[r]` lists phase r's taps as `(k, d)`: tap `k` reads input `q + d` for output `s q + r`."""
  n_out = (n - 1) * s + 1 + low + high - k + 1
  if n_out <= 0:
    raise ValueError(
      f"transposed convolution of size {n} with kernel {k}, stride {s}, padding {(low, high)} is empty"
    )
  phases = [[(t, (r + t - low) // s) for t in range(k) if (r + t - low) % s == 0] for r in range(s)]
  return n_out, -(-n_out // s), phases


def _interleave(phases: list[jax.Array], strides: tuple[int, ...], out_shape: Sequence[int]) -> jax.Array:
  """Phase outputs `[B, *m, C]` in row-major phase order -> `[B, *out_shape, C]` (depth to space, cropped)."""
  nd = len(strides)
  b, *m, c = phases[0].shape
  y = jnp.stack(phases).reshape(*strides, b, *m, c)
  order = [nd] + [i for d in range(nd) for i in (nd + 1 + d, d)] + [2 * nd + 1]
  y = y.transpose(order).reshape(b, *(mi * s for mi, s in zip(m, strides, strict=True)), c)
  if list(y.shape[1:-1]) != list(out_shape):
    y = y[(slice(None), *(slice(0, n) for n in out_shape), slice(None))]
  return y


def _dims(x_shape, window, strides, pads):
  return [_plan(n, k, s, lo, hi) for n, k, s, (lo, hi) in zip(x_shape[1:-1], window, strides, pads, strict=True)]


def _phase_form(x, kernel, strides, pads):
  """The value by `prod(strides)` stride-1 convolutions (see the module docstring)."""
  nd = x.ndim - 2
  dims = _dims(x.shape, kernel.shape[:nd], strides, pads)
  sp = "DHW"[3 - nd :]
  dn = (f"N{sp}C", f"{sp}IO", f"N{sp}C")
  b, cout = x.shape[0], kernel.shape[-1]
  m = [d[1] for d in dims]
  outs = []
  for taps in itertools.product(*(d[2] for d in dims)):
    if any(not t for t in taps):  # a phase no tap reaches (kernel smaller than the stride): zeros
      outs.append(jnp.zeros((b, *m, cout), jnp.result_type(x, kernel)))
      continue
    # Phase output q reads input q + d for the taps' consecutive offsets d = d0, d0 + 1, ...: a
    # stride-1 convolution with padding (-d0, ...). Negative padding is applied as a crop of the
    # input: XLA:CPU (jaxlib 0.10.2) computes wrong values for convolutions with negative padding
    # and more than one input channel.
    pads_r = [(-t[0][1], mi - 1 + t[-1][1] - (n - 1)) for t, mi, n in zip(taps, m, x.shape[1:-1], strict=True)]
    crop = tuple(slice(max(0, -lo), n - max(0, -hi)) for (lo, hi), n in zip(pads_r, x.shape[1:-1], strict=True))
    if any(c.stop <= c.start for c in crop):
      outs.append(jnp.zeros((b, *m, cout), jnp.result_type(x, kernel)))
      continue
    sub = kernel[tuple(slice(t[0][0], None, s) for t, s in zip(taps, strides, strict=True))]
    xc = x[(slice(None), *crop, slice(None))]
    pos = [(max(0, lo), max(0, hi)) for lo, hi in pads_r]
    outs.append(lax.conv_general_dilated(xc, sub, (1,) * nd, pos, dimension_numbers=dn))
  return _interleave(outs, strides, [d[0] for d in dims])


def _col2im(t, x_shape, window, strides, pads):
  """Output pixels from tap responses `t [B, *n, *window, Cout]`: phase r at q sums `t[q + d_k, k]`."""
  nd = len(window)
  dims = _dims(x_shape, window, strides, pads)
  m = [d[1] for d in dims]
  pieces = split_taps(t.reshape(*t.shape[: nd + 1], math.prod(window), t.shape[-1]), axis=nd + 1)
  outs = []
  for taps in itertools.product(*(d[2] for d in dims)):
    acc = None
    for combo in itertools.product(*taps):
      k = tuple(kd for kd, _ in combo)
      tk = pieces[int(np.ravel_multi_index(k, window))]  # [B, *n, Cout]
      # shifted[q] = tk[q + d], zero outside the input: lax.pad with (possibly negative) edges.
      cfg = [(0, 0, 0)] + [(-d, mi - n + d, 0) for (_, d), mi, n in zip(combo, m, x_shape[1:-1], strict=True)]
      shifted = lax.pad(tk, jnp.zeros((), t.dtype), cfg + [(0, 0, 0)])
      acc = shifted if acc is None else acc + shifted
    outs.append(acc if acc is not None else jnp.zeros((t.shape[0], *m, t.shape[-1]), t.dtype))
  return _interleave(outs, strides, [d[0] for d in dims])


def _gemm_form(x, kernel, strides, pads):
  """The value as `col2im(x @ W)` (see the module docstring); linear in `x` and in `kernel`."""
  nd = x.ndim - 2
  window, cin, cout = kernel.shape[:nd], kernel.shape[-2], kernel.shape[-1]
  w = jnp.moveaxis(kernel, -2, 0).reshape(cin, math.prod(window) * cout)
  t = jnp.dot(x.reshape(-1, cin), w).reshape(*x.shape[:-1], *window, cout)
  return _col2im(t, x.shape, window, strides, pads)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _conv_transpose(x, kernel, strides, pads):
  form = _phase_form if kernel.shape[-1] >= PHASE_MIN_FEATURES else _gemm_form
  return form(x, kernel, strides, pads)


@functools.partial(_conv_transpose.defjvp, symbolic_zeros=True)
def _conv_transpose_jvp(strides, pads, primals, tangents):
  x, kernel = primals
  dx, dkernel = tangents
  y = _conv_transpose(x, kernel, strides, pads)
  # The tangent by the matmul form, one col2im for both terms: its transpose computes the
  # shifted-slice gather of the output gradient once for the input and the weight gradient.
  nd = x.ndim - 2
  window, cin, cout = kernel.shape[:nd], kernel.shape[-2], kernel.shape[-1]
  flat = lambda k: jnp.moveaxis(k, -2, 0).reshape(cin, math.prod(window) * cout)
  t = None
  if not isinstance(dx, SymbolicZero):
    t = jnp.dot(dx.reshape(-1, cin), flat(kernel))
  if not isinstance(dkernel, SymbolicZero):
    term = jnp.dot(x.reshape(-1, cin), flat(dkernel))
    t = term if t is None else t + term
  if t is None:
    return y, jnp.zeros_like(y)
  return y, _col2im(t.reshape(*x.shape[:-1], *window, cout), x.shape, window, strides, pads)


def conv_transpose(
  x: jax.Array,
  kernel: jax.Array,
  strides: Sequence[int],
  padding: str | Sequence[tuple[int, int]] = "SAME",
) -> jax.Array:
  """`lax.conv_transpose(x, kernel, strides, padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))`
  (1-3 spatial dims, `transpose_kernel=False`), computed as the module docstring says.

  `x [B, *spatial, Cin]`, `kernel [*window, Cin, Cout]` -> `[B, *out_spatial, Cout]`.
  """
  nd = x.ndim - 2
  strides = tuple(int(s) for s in strides)
  if not 1 <= nd <= 3 or len(strides) != nd or kernel.ndim != nd + 2 or kernel.shape[-2] != x.shape[-1]:
    raise ValueError(
      f"conv_transpose needs x [B, *spatial, C] (1-3 spatial dims) and kernel [*window, C, Cout] with one "
      f"stride per spatial dim; got x {x.shape}, kernel {kernel.shape}, strides {strides}"
    )
  window = kernel.shape[:nd]
  if isinstance(padding, str):
    pads = tuple(transpose_padding(k, s, padding) for k, s in zip(window, strides, strict=True))
  else:
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  _dims(x.shape, window, strides, pads)  # raises on an empty output
  return _conv_transpose(x, kernel, strides, pads)


class ConvTranspose(nn.Module):
  """Drop-in for `flax.linen.ConvTranspose` (see the module docstring for the options it covers).

  `[B, *spatial, Cin]` -> `[B, *out_spatial, features]`; params `kernel [*kernel_size, Cin, features]`
  and `bias [features]`, created and initialized as Flax creates them.
  """

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] | None = None
  padding: str | Sequence[tuple[int, int]] = "SAME"
  use_bias: bool = True
  kernel_init: nn.initializers.Initializer = default_kernel_init
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
  dtype: Any = None  # the compute dtype (None: the inputs'); parameters are `param_dtype`
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    nd = len(self.kernel_size)
    if x.ndim != nd + 2:
      raise ValueError(f"ConvTranspose with a {nd}-D kernel expects x [B, *{nd} spatial, C], got shape {x.shape}")
    strides = tuple(self.strides) if self.strides is not None else (1,) * nd
    kernel_shape = tuple(self.kernel_size) + (x.shape[-1], self.features)
    kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = conv_transpose(x, kernel, strides, self.padding)
    return y + bias if bias is not None else y
