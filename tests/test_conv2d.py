"""`genjax.nn.conv2d`: the matmul forms of narrow convolutions are the same linear map as
`lax.conv_general_dilated` plus a bias, in values and in all three gradients, and `Conv` is flax's `Conv`."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from genjax.nn import conv2d

DN = ("NHWC", "HWIO", "NHWC")

# (x shape, kernel shape, strides, padding, the form conv2d picks)
CASES = [
  ((2, 9, 9, 1), (3, 3, 1, 16), (1, 1), "SAME", "im2col"),  # a flow's first conv on one channel
  ((2, 8, 8, 4), (3, 3, 4, 64), (1, 1), "SAME", "im2col"),
  ((2, 7, 6, 64), (3, 3, 64, 2), (1, 1), "SAME", "taps"),  # a coupling's shift/log-scale head
  ((2, 8, 8, 32), (3, 3, 32, 7), (1, 1), "VALID", "taps"),
  ((2, 9, 8, 2), (3, 3, 2, 8), (2, 2), "SAME", "im2col"),  # strided, odd size
  ((2, 8, 8, 3), (4, 4, 3, 5), (2, 2), ((1, 2), (2, 1)), "im2col"),  # explicit, uneven padding
  ((2, 6, 6, 32), (3, 3, 32, 32), (1, 1), "SAME", "xla"),
]


def _reference(x, k, strides, padding):
  return lax.conv_general_dilated(x, k, strides, padding, dimension_numbers=DN, precision=lax.Precision.HIGHEST)


@pytest.mark.parametrize("xs,ks,strides,padding,form", CASES)
def test_same_values_and_gradients_as_lax_conv(xs, ks, strides, padding, form):
  kx, kk, kb, kc = jax.random.split(jax.random.key(0), 4)
  x, k = jax.random.normal(kx, xs), jax.random.normal(kk, ks)
  kh, kw, cin, cout = ks
  picked = (
    "im2col"
    if kh * kw * cin <= conv2d.NARROW
    else "taps"
    if kh * kw * cout <= conv2d.NARROW and strides == (1, 1)
    else "xla"
  )
  assert picked == form
  bias = jax.random.normal(kb, (cout,))  # im2col folds it into the product: a ones column
  want, vjp_want = jax.vjp(lambda a, b, c: _reference(a, b, strides, padding) + c, x, k, bias)
  got, vjp_got = jax.vjp(lambda a, b, c: conv2d.conv2d(a, b, strides, padding, c), x, k, bias)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  cot = jax.random.normal(kc, want.shape)
  for g, w in zip(vjp_got(cot), vjp_want(cot), strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-3)


def test_conv_module_is_flax_conv():
  x = jax.random.normal(jax.random.key(1), (2, 7, 7, 2))
  ours, theirs = conv2d.Conv(16, (3, 3)), nn.Conv(16, (3, 3))
  p_ours, p_theirs = ours.init(jax.random.key(2), x), theirs.init(jax.random.key(2), x)
  assert jax.tree.map(jnp.shape, p_ours) == jax.tree.map(jnp.shape, p_theirs)
  np.testing.assert_array_equal(p_ours["params"]["kernel"], p_theirs["params"]["kernel"])  # same init
  np.testing.assert_allclose(ours.apply(p_theirs, x), theirs.apply(p_theirs, x), rtol=1e-5, atol=1e-5)


def test_bad_shapes_are_named():
  with pytest.raises(ValueError, match="kernel"):
    conv2d.conv2d(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 3, 4)))
  with pytest.raises(ValueError, match="padding"):
    conv2d.conv2d(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 2, 4)), padding="FULL")
