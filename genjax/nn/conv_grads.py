"""A convolution's two gradients in the forms that run fastest on XLA:CPU, by measurement.

`conv(x, kernel, strides, pads)` and `dense(x, kernel)` are `lax.conv_general_dilated`
(NHWC, HWIO) and `x @ kernel` with XLA's forward pass; only their derivatives differ, and
only on the CPU backend:

* **Weight gradient by a CPU kernel.** It sums, over every output pixel, the outer product
  of the input window it read and its output gradient. For narrow layers (1x1 skip
  convolutions, attention projections over pixels, strided downsampling, 16-64 channels
  over 10^4-10^5 pixels) XLA:CPU runs this reduction at 10-30% of the machine's roofline,
  memory-bound on layouts it transposes first (`python -m benchmarks.op_report
  --config=configs/ddpm.py:peer`). `genjax/native/conv_wgrad.cc` reads both operands in
  place and accumulates register tiles over pixels held in the L1 cache; its sums run over
  chunks of pixels fixed by the shapes and added in order, so results do not depend on the
  number of threads. `use_kernel` picks the layers: float32, output channels a multiple of
  8, and the shapes where it measured faster than XLA's (module constants below).
* **Input gradient of a strided convolution by phases.** It is a transposed convolution
  of the output gradient, which XLA runs as a base-dilated convolution (zeros between the
  pixels) at 14-51% of the roofline. Split by the input pixel's phase modulo the stride,
  it is `prod(strides)` stride-1 convolutions with the sub-kernels that meet real pixels,
  interleaved (`genjax.nn.conv_transpose`'s phase form, applied to the flipped kernel):
  1.4-2.4x faster one layer at a time at the U-Net's downsampling and the DCGAN
  discriminator's layers (the discriminator keeps `nn.Conv`: no gain in its whole step).
  `use_phases` picks them: strides above 1 and at least `conv_transpose.PHASE_MIN_FEATURES`
  input channels (the phases' outputs; narrower ones ran slower).

Each changed derivative is a primitive: the convolution's tangent map in the weight (or in
the input), whose transpose is the kernel (or the phases) on CPU and XLA's own gradient on
other backends. Forward mode, `vmap` and second derivatives use XLA's form. Results equal
XLA's to float rounding (`tests/test_conv_grads.py`). `GENJAX_NO_FUSED_KERNELS=1` keeps
XLA's weight gradient everywhere (`genjax.nn.native`); `GENJAX_NO_PHASE_DGRAD=1` (read at
trace time) XLA's input gradient.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from genjax.nn import native

DN = ("NHWC", "HWIO", "NHWC")
_TARGET = "genjax_conv_wgrad"
# Dense layers over fewer rows than this keep XLA's weight gradient (one chunk: one thread).
MIN_DENSE_ROWS = 1024
# Windowed convolutions take the kernel up to these widths; 1x1 ones at any width. Measured
# against XLA's weight gradient (Eigen convolutions) at the DDPM U-Net's and DCGAN's shapes
# (`tests/test_conv_grads.py` docstring): 1x1 1.2-2.9x faster, 3x3 from 32 channels 1.1-1.4x,
# 4x4/2 from 1 channel 2.3x; 3x3 from 64 channels or more 0.4-1.0x, so XLA keeps those.
MAX_WINDOWED_IN = 32
MAX_WINDOWED_OUT = 64


def _pointwise(kernel_shape, strides, pads) -> bool:
  return tuple(kernel_shape[:2]) == (1, 1) and tuple(strides) == (1, 1) and all(p == (0, 0) for p in pads)


def conv_reference(x, kernel, strides, pads):
  """`lax.conv_general_dilated(x, kernel, strides, pads)` (NHWC, HWIO); a 1x1 one as a product."""
  if _pointwise(kernel.shape, strides, pads):
    c, o = kernel.shape[2:]
    return jnp.dot(x.reshape(-1, c), kernel.reshape(c, o)).reshape(*x.shape[:3], o)
  return lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=DN)


def wgrad_reference(x, ct, kernel_shape, strides, pads):
  """The weight gradient of `conv_reference(x, kernel)` against the output cotangent `ct`, by XLA."""
  if _pointwise(kernel_shape, strides, pads):
    c, o = kernel_shape[2:]
    flat = lax.dot_general(x.reshape(-1, c), ct.reshape(-1, o), (((0,), (0,)), ((), ())))
    return flat.reshape(kernel_shape)
  spec = jax.ShapeDtypeStruct(kernel_shape, ct.dtype)
  return jax.linear_transpose(lambda k: conv_reference(x, k, strides, pads), spec)(ct)[0]


def _ffi_wgrad(x, ct, kernel_shape, strides, pads):
  kh, kw, c, o = kernel_shape
  if _pointwise(kernel_shape, strides, pads):  # one long row of pixels: the longest runs
    x, ct = x.reshape(1, 1, -1, c), ct.reshape(1, 1, -1, o)
  elif any(p != (0, 0) for p in pads):
    x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)])
  out = jax.ShapeDtypeStruct((kh, kw * c, o), jnp.float32)
  dw = jax.ffi.ffi_call(_TARGET, out)(x, ct, sh=np.int64(strides[0]), sw=np.int64(strides[1]))
  return dw.reshape(kernel_shape)


def _wgrad_any(x, ct, *, kernel_shape, strides, pads):
  return lax.platform_dependent(
    x,
    ct,
    cpu=functools.partial(_ffi_wgrad, kernel_shape=kernel_shape, strides=strides, pads=pads),
    default=functools.partial(wgrad_reference, kernel_shape=kernel_shape, strides=strides, pads=pads),
  )


def _input_vjp_pads(n, m, k, s, lo):
  """(low, high) padding of the stride-dilated output gradient whose stride-1 convolution with the
  flipped kernel is the input gradient of a length-`n` input (window `k`, stride `s`, low pad `lo`,
  output length `m`)."""
  return k - 1 - lo, n - 1 - (m - 1) * s + lo


def dgrad_phases(ct, kernel, x_shape, strides, pads):
  """The input gradient of `conv_reference(x, kernel, strides, pads)` against `ct`, by phases."""
  from genjax.nn import conv_transpose  # here: conv_transpose imports conv2d, which imports this module

  flipped = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)
  vjp_pads = tuple(
    _input_vjp_pads(n, m, k, s, lo)
    for n, m, k, s, (lo, _) in zip(x_shape[1:3], ct.shape[1:3], kernel.shape[:2], strides, pads, strict=True)
  )
  return conv_transpose._phase_form(ct, flipped, strides, vjp_pads)


def dgrad_reference(ct, kernel, x_shape, strides, pads):
  """The input gradient of `conv_reference(x, kernel, strides, pads)` against `ct`, by XLA."""
  spec = jax.ShapeDtypeStruct(x_shape, ct.dtype)
  return jax.linear_transpose(lambda x: conv_reference(x, kernel, strides, pads), spec)(ct)[0]


def _dgrad_any(ct, kernel, *, x_shape, strides, pads):
  return lax.platform_dependent(
    ct,
    kernel,
    cpu=lambda c, k: dgrad_phases(c, k, x_shape, strides, pads),
    default=lambda c, k: dgrad_reference(c, k, x_shape, strides, pads),
  )


def _bilinear_primitive(name, linear, abstract, lower, reference, transpose):
  """A primitive `P(a, b)`, bilinear, whose operand `linear` has a custom cotangent:
  `transpose(other_operand, ct, aval_of_linear_operand, **params)`. It lowers to `lower`; its
  other operand's tangent and `vmap` go through `reference`, its XLA form (so forward mode and
  second derivatives are XLA's)."""
  prim = Primitive(name)
  other = 1 - linear
  prim.def_abstract_eval(abstract)
  prim.def_impl(lambda *args, **params: jax.jit(functools.partial(prim.bind, **params))(*args))
  mlir.register_lowering(prim, mlir.lower_fun(lower, multiple_results=False))

  def jvp(primals, tangents, **params):
    out = prim.bind(*primals, **params)
    parts = []
    for i, fn in ((linear, prim.bind), (other, reference)):
      if type(tangents[i]) is not ad.Zero:
        args = list(primals)
        args[i] = tangents[i]
        parts.append(fn(*args, **params))
    return out, functools.reduce(jnp.add, parts) if parts else jnp.zeros_like(out)

  def transpose_rule(ct, *args, **params):
    if ad.is_undefined_primal(args[other]):
      raise NotImplementedError(f"{name} is linear in its operand {linear} only")
    cts = [None, None]
    if type(ct) is not ad.Zero:
      cts[linear] = transpose(args[other], ct, args[linear].aval, **params)
    return cts

  ad.primitive_jvps[prim] = jvp
  ad.primitive_transposes[prim] = transpose_rule
  batching.primitive_batchers[prim] = native.batched_by(reference)
  return prim


def _conv_abstract(x, kernel, *, strides, pads):
  shape = jax.eval_shape(lambda a, b: conv_reference(a, b, strides, pads), x, kernel).shape
  return jax.core.ShapedArray(shape, x.dtype)


def _conv_kw(x, kernel, *, strides, pads):
  return conv_reference(x, kernel, strides, pads)


# The convolution's tangent maps, `conv(x, dW)` (linear in dW) and `conv(dx, W)` (linear in dx),
# and their transposes: the weight gradient `wgrad_p(x, ct)` (the kernel on CPU) and the input
# gradient `dgrad_p(ct, W)` (phases on CPU); each lowers to XLA's form on other backends.
weight_tangent_p = _bilinear_primitive(
  "genjax_conv_weight_tangent",
  1,
  _conv_abstract,
  _conv_kw,
  _conv_kw,
  lambda x, ct, dw, **p: wgrad_p.bind(x, ct, kernel_shape=tuple(dw.shape), **p),
)
wgrad_p = _bilinear_primitive(
  "genjax_conv_wgrad",
  1,
  lambda x, ct, *, kernel_shape, **p: jax.core.ShapedArray(kernel_shape, ct.dtype),
  _wgrad_any,
  lambda x, ct, *, kernel_shape, strides, pads: wgrad_reference(x, ct, kernel_shape, strides, pads),
  lambda x, cw, ct, *, kernel_shape, **p: weight_tangent_p.bind(x, cw, **p),
)
input_tangent_p = _bilinear_primitive(
  "genjax_conv_input_tangent",
  0,
  _conv_abstract,
  _conv_kw,
  _conv_kw,
  lambda kernel, ct, dx, **p: dgrad_p.bind(ct, kernel, x_shape=tuple(dx.shape), **p),
)
dgrad_p = _bilinear_primitive(
  "genjax_conv_dgrad",
  0,
  lambda ct, kernel, *, x_shape, **p: jax.core.ShapedArray(x_shape, ct.dtype),
  _dgrad_any,
  lambda ct, kernel, *, x_shape, strides, pads: dgrad_reference(ct, kernel, x_shape, strides, pads),
  lambda kernel, cx, ct, *, x_shape, **p: input_tangent_p.bind(cx, kernel, **p),
)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5))
def _conv(x, kernel, strides, pads, kernel_wgrad, phase_dgrad):
  return conv_reference(x, kernel, strides, pads)


def _conv_jvp(strides, pads, kernel_wgrad, phase_dgrad, primals, tangents):
  (x, kernel), (tx, tk) = primals, tangents
  y = conv_reference(x, kernel, strides, pads)
  parts = []
  if not isinstance(tx, SymbolicZero):
    tangent = input_tangent_p.bind if phase_dgrad else _conv_kw
    parts.append(tangent(tx, kernel, strides=strides, pads=pads))
  if not isinstance(tk, SymbolicZero):
    tangent = weight_tangent_p.bind if kernel_wgrad else _conv_kw
    parts.append(tangent(x, tk, strides=strides, pads=pads))
  return y, functools.reduce(jnp.add, parts) if parts else jnp.zeros_like(y)


_conv.defjvp(_conv_jvp, symbolic_zeros=True)


def flops(primitive_name: str, in_shapes, params) -> int | None:
  """Multiply-adds x 2 of one weight-gradient kernel call, from its shapes; None for other primitives."""
  if primitive_name != wgrad_p.name:
    return None
  kh, kw, c, o = params["kernel_shape"]
  ct = in_shapes[1]
  return 2 * math.prod(ct[:-1]) * kh * kw * c * o


def use_kernel(x, kernel, strides=(1, 1), pads=((0, 0), (0, 0))) -> bool:
  """Whether `conv` takes the kernel for these shapes (module docstring)."""
  if native.status() != "loaded" or x.ndim != 4 or kernel.ndim != 4:
    return False
  if x.dtype != jnp.float32 or kernel.dtype != jnp.float32 or kernel.shape[3] % 8:
    return False
  if any(p < 0 for pair in pads for p in pair) or any(s < 1 for s in strides):
    return False
  kh, kw, c, o = kernel.shape
  return kh * kw == 1 or (c <= MAX_WINDOWED_IN and o <= MAX_WINDOWED_OUT)


def _normalize(strides, pads):
  return tuple(int(s) for s in strides), tuple((int(lo), int(hi)) for lo, hi in pads)


def use_phases(x, kernel, strides=(1, 1), pads=((0, 0), (0, 0))) -> bool:
  """Whether `conv` takes the phase form for its input gradient (module docstring)."""
  from genjax.nn.conv_transpose import PHASE_MIN_FEATURES

  if os.environ.get("GENJAX_NO_PHASE_DGRAD", "") not in ("", "0") or x.ndim != 4 or kernel.ndim != 4:
    return False
  if any(p < 0 for pair in pads for p in pair):
    return False
  if any(lo > k - 1 for (lo, _), k in zip(pads, kernel.shape[:2], strict=True)):
    return False
  return max(strides) > 1 and min(strides) >= 1 and kernel.shape[2] >= PHASE_MIN_FEATURES


def conv(x, kernel, strides=(1, 1), pads=((0, 0), (0, 0))):
  """`lax.conv_general_dilated(x, kernel, strides, pads)`, NHWC x HWIO -> NHWC, `pads`
  ((lo, hi), (lo, hi)); the weight gradient by the CPU kernel where `use_kernel` says so, the
  input gradient by phases where `use_phases` does."""
  strides, pads = _normalize(strides, pads)
  kernel_wgrad, phase_dgrad = use_kernel(x, kernel, strides, pads), use_phases(x, kernel, strides, pads)
  if not (kernel_wgrad or phase_dgrad):
    return lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=DN)
  return _conv(x, kernel, strides, pads, kernel_wgrad, phase_dgrad)


def dense(x, kernel):
  """`x @ kernel`, `x [..., K]`, `kernel [K, M]` -> `[..., M]`, with the weight gradient by
  the CPU kernel when there are at least `MIN_DENSE_ROWS` rows (pixels) and `use_kernel`."""
  rows = math.prod(x.shape[:-1])
  k, m = kernel.shape
  if rows < MIN_DENSE_ROWS or not use_kernel(x.reshape(1, 1, rows, k), kernel[None, None]):
    return jnp.dot(x, kernel)
  y = _conv(x.reshape(1, 1, rows, k), kernel[None, None], (1, 1), ((0, 0), (0, 0)), True, False)
  return y.reshape(*x.shape[:-1], m)


class Dense(nn.Module):
  """Drop-in for `flax.linen.Dense` over the last axis, computed by `dense`: `[..., K]` ->
  `[..., features]`; params `kernel [K, features]` and `bias [features]`, created and
  initialized as Flax creates them."""

  features: int
  use_bias: bool = True
  kernel_init: nn.initializers.Initializer = nn.linear.default_kernel_init
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
  dtype: Any = None  # the compute dtype (None: inferred from the inputs and parameters, as Flax does)
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = dense(x, kernel)
    return y if bias is None else y + bias
