"""A coupling net's two narrow 3x3 convolutions as one fused CPU kernel.

RealNVP's coupling nets without residual blocks are `conv_out(relu(conv_in(x)))`: a 3x3
convolution from the few channels a coupling conditions on (1-4) to `F` features, and a
3x3 one back to its 2-8 shift and log-scale channels. XLA runs them as im2col and tap
products (`genjax.nn.conv2d`) with the `[B H W, F]` hidden activations written, read by
the ReLU, written again and read back by each gradient: at 28x28, batch 64 and 64
features, 12.8 MB per pass, so the step is memory bound (README, benchmark section).

On the CPU backend `conv_net` runs the per-pixel part, `T = relu(P W1 + b1) W2` (the
patches `P [9 C_in, B H W]`, the tap responses `T [9 C_out, B H W]`), as one kernel
(`genjax/native/coupling_net.cc`, an XLA FFI custom call) that keeps 128 pixels' hidden
activations in the L1 cache, and its backward pass as a second one that recomputes them
from `P`. The patches and the sum of the shifted tap responses stay XLA ops; so does the
whole net on other backends, for other dtypes, and where the kernel is not built.

Differentiation: reverse mode (`grad`, `vjp`, `jacrev`) transposes into the backward
kernel; forward mode (`jvp`, `jacfwd`) evaluates the tangent map with XLA ops, and so do
second derivatives (the backward kernel's derivative is its XLA form's); `vmap` maps the
XLA form.
The kernel's results equal the XLA form's to float rounding (`tests/test_coupling_net.py`)
and do not depend on the number of threads.

`GENJAX_NO_FUSED_KERNELS=1` (read once, at first use; `genjax.nn.native`) keeps the XLA form
everywhere.

On a mesh of several CPU devices the results stay right, but XLA's partitioner, which
knows nothing of a custom call, gathers the kernels' operands onto every device, and each
device computes the whole batch: the kernel is built for the single-device CPU step
(`jax.experimental.custom_partitioning` rules would keep the pixels sharded; they failed
to lower inside these primitives in this jax, 0.10.2, and were left out).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from genjax.nn import conv2d, native

_FWD_TARGET = "genjax_coupling_net_fwd"
_BWD_TARGET = "genjax_coupling_net_bwd"


def kernel_status() -> str:
  """'loaded', or why the fused kernel is not used (the XLA form runs instead): `native.status()`."""
  return native.status()


# --------------------------------------------------------------------------- the per-pixel net


def pixel_net_reference(p, w1, b1, w2):
  """`T [O, N] = W2^T relu(W1^T P + b1)` in XLA ops: `P [K, N]`, `W1 [K, F]`, `b1 [F]`, `W2 [F, O]`."""
  h = jax.nn.relu(jnp.dot(w1.T, p) + b1[:, None])
  return jnp.dot(w2.T, h)


def _ffi_fwd(p, w1, b1, w2):
  out = jax.ShapeDtypeStruct((w2.shape[1], p.shape[1]), jnp.float32)
  return jax.ffi.ffi_call(_FWD_TARGET, out, vmap_method="sequential")(p, w1, b1, w2)


def _ffi_bwd(p, w1, b1, w2, dt):
  outs = [jax.ShapeDtypeStruct(a.shape, jnp.float32) for a in (p, w1, b1, w2)]
  return tuple(jax.ffi.ffi_call(_BWD_TARGET, outs, vmap_method="sequential")(p, w1, b1, w2, dt))


def _reference_bwd(p, w1, b1, w2, dt):
  return jax.vjp(pixel_net_reference, p, w1, b1, w2)[1](dt)


def _reference_tangent(p, w1, b1, w2, dp, dw1, db1, dw2):
  return jax.jvp(pixel_net_reference, (p, w1, b1, w2), (dp, dw1, db1, dw2))[1]


# `pixel_net_p(P, W1, b1, W2) -> T`; its JVP is `pixel_net_p` plus the tangent map
# `pixel_net_tangent_p(P, W1, b1, W2, dP, dW1, db1, dW2)`, linear in the last four, whose
# transpose is `pixel_net_bwd_p(P, W1, b1, W2, dT) -> (dP, dW1, db1, dW2)`, the backward
# kernel. Each lowers to the kernel on CPU and to XLA ops elsewhere.
pixel_net_p = Primitive("genjax_pixel_net")
pixel_net_tangent_p = Primitive("genjax_pixel_net_tangent")
pixel_net_bwd_p = Primitive("genjax_pixel_net_bwd")
pixel_net_bwd_p.multiple_results = True


def _abstract_t(p, w1, b1, w2, *tangents):
  return jax.core.ShapedArray((w2.shape[1], p.shape[1]), jnp.float32)


def _abstract_bwd(p, w1, b1, w2, dt):
  return [jax.core.ShapedArray(a.shape, jnp.float32) for a in (p, w1, b1, w2)]


def _fwd_any(*args):
  return lax.platform_dependent(*args, cpu=_ffi_fwd, default=pixel_net_reference)


def _bwd_any(*args):
  return lax.platform_dependent(*args, cpu=_ffi_bwd, default=_reference_bwd)


for _prim, _abstract, _lower, _multiple in (
  (pixel_net_p, _abstract_t, _fwd_any, False),
  (pixel_net_tangent_p, _abstract_t, _reference_tangent, False),
  (pixel_net_bwd_p, _abstract_bwd, _bwd_any, True),
):
  _prim.def_abstract_eval(_abstract)
  _prim.def_impl(jax.jit(_prim.bind))
  mlir.register_lowering(_prim, mlir.lower_fun(_lower, multiple_results=_multiple))


def _pixel_net_jvp(primals, tangents):
  tangents = [ad.instantiate_zeros(t) for t in tangents]
  return pixel_net_p.bind(*primals), pixel_net_tangent_p.bind(*primals, *tangents)


def _pixel_net_tangent_transpose(ct, p, w1, b1, w2, *tangents):
  if any(ad.is_undefined_primal(a) for a in (p, w1, b1, w2)):
    raise NotImplementedError("genjax_pixel_net_tangent is linear in its tangents only")
  cts = [None] * 4 if type(ct) is ad.Zero else pixel_net_bwd_p.bind(p, w1, b1, w2, ct)
  return [None] * 4 + [c if ad.is_undefined_primal(t) else None for c, t in zip(cts, tangents, strict=True)]


def _pixel_net_bwd_jvp(primals, tangents):
  # Second derivatives: differentiate the backward pass's XLA form.
  out, tangents_out = jax.jvp(_reference_bwd, tuple(primals), tuple(ad.instantiate_zeros(t) for t in tangents))
  return list(out), list(tangents_out)


ad.primitive_jvps[pixel_net_p] = _pixel_net_jvp
ad.primitive_jvps[pixel_net_bwd_p] = _pixel_net_bwd_jvp
ad.primitive_transposes[pixel_net_tangent_p] = _pixel_net_tangent_transpose


batching.primitive_batchers[pixel_net_p] = native.batched_by(pixel_net_reference)
batching.primitive_batchers[pixel_net_tangent_p] = native.batched_by(_reference_tangent)
batching.primitive_batchers[pixel_net_bwd_p] = native.batched_by(_reference_bwd, multiple=True)


def flops(primitive_name: str, in_shapes) -> int | None:
  """Multiply-adds x 2 of one execution of a fused primitive, from its input shapes; None for others.

  Forward: `2 N (K F + F O)`. Backward: the recomputed hidden layer, `dH`, `dW2`, `dW1` and
  `dP`: `2 N (3 K F + 2 F O)`.
  """
  if primitive_name not in (pixel_net_p.name, pixel_net_bwd_p.name):
    return None
  (k, n), (_, f), _, (_, o) = in_shapes[:4]
  if primitive_name == pixel_net_p.name:
    return 2 * n * (k * f + f * o)
  return 2 * n * (3 * k * f + 2 * f * o)


def pixel_net(p, w1, b1, w2):
  """`W2^T relu(W1^T P + b1)`, `[K, N], [K, F], [F], [F, O] -> [O, N]`, fused on CPU when built."""
  if kernel_status() != "loaded":
    return pixel_net_reference(p, w1, b1, w2)
  return pixel_net_p.bind(p, w1, b1, w2)


# --------------------------------------------------------------------------- the conv net


def _channel_major_taps(x: jax.Array) -> jax.Array:
  """3x3 'SAME' patches of `x [B, H, W, C]` as `[9 C, B H W]`, rows in the kernel's (tap, c) order."""
  b, h, w, c = x.shape
  xt = jnp.moveaxis(x, 3, 0).reshape(c * b, h, w, 1)
  taps = [conv2d._shifted(xt, (i - 1, j - 1), (1, 1), (h, w)) for i in range(3) for j in range(3)]
  return jnp.stack(taps).reshape(9 * c, b * h * w)


def _sum_tap_responses(t: jax.Array, shape) -> jax.Array:
  """`T [9 C_out, B H W]` (rows (tap, c)) -> the 3x3 'SAME' convolution's output `[B, H, W, C_out]`."""
  b, h, w = shape
  c = t.shape[0] // 9
  pieces = conv2d.split_taps(t.reshape(9, c * b, h, w, 1), axis=0)
  y = conv2d.sum_tap_responses(pieces, (3, 3), ((1, 1), (1, 1)), (h, w))
  return jnp.moveaxis(y.reshape(c, b, h, w), 0, 3)


def fusable(x: jax.Array, out: int) -> bool:
  """Whether `conv_net` takes the fused kernel for these shapes (float32, narrow in and out)."""
  return (
    kernel_status() == "loaded"
    and x.ndim == 4
    and x.dtype == jnp.float32
    and 9 * x.shape[-1] <= conv2d.NARROW
    and 9 * out <= conv2d.NARROW
  )


def conv_net(x, kernel_in, bias_in, kernel_out, bias_out):
  """`conv(relu(conv(x, kernel_in) + bias_in), kernel_out) + bias_out`, both 3x3 'SAME', stride 1.

  `x [B, H, W, C]`, `kernel_in [3, 3, C, F]`, `bias_in [F]`, `kernel_out [3, 3, F, O]`,
  `bias_out [O]` -> `[B, H, W, O]`. The per-pixel products run fused (module docstring).
  """
  b, h, w, c = x.shape
  f, o = kernel_in.shape[-1], kernel_out.shape[-1]
  p = _channel_major_taps(x)
  w1 = kernel_in.reshape(9 * c, f)
  w2 = jnp.moveaxis(kernel_out, 2, 0).reshape(f, 9 * o)  # columns (tap, o)
  t = pixel_net(p, w1, bias_in, w2)
  return _sum_tap_responses(t, (b, h, w)) + bias_out
