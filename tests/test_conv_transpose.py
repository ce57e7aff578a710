"""`genjax.nn.conv_transpose`: the same linear map, parameters and initialization as Flax's
`ConvTranspose` (`lax.conv_transpose`), in values and in gradients, in both of its forms."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from genjax.nn import conv_transpose as ct
from genjax.nn.conv_transpose import ConvTranspose, conv_transpose, transpose_padding


def _reference(x, w, strides, padding):
  sp = "DHW"[3 - (x.ndim - 2) :]
  return lax.conv_transpose(x, w, strides, padding, dimension_numbers=(f"N{sp}C", f"{sp}IO", f"N{sp}C"))


# Every transposed convolution genjax builds: the DCGAN's 4x4 stride 2 (with and without bias, wide,
# and down to 1 output channel), the conv VAE decoder's 3x3 stride 2; both 'SAME'. Output widths on
# both sides of PHASE_MIN_FEATURES, so both forward forms run.
REPO_CASES = [
  # (input shape, kernel, stride, features, use_bias)
  ((2, 4, 4, 6), 4, 2, 40, False),
  ((2, 7, 7, 3), 4, 2, 1, True),
  ((3, 7, 7, 4), 3, 2, 5, True),
  ((2, 3, 3, 8), 3, 2, 32, True),
]


@pytest.mark.parametrize("shape,k,s,features,use_bias", REPO_CASES)
def test_layer_matches_flax_in_values_gradients_and_init(shape, k, s, features, use_bias):
  x = jax.random.normal(jax.random.key(0), shape)
  ours = ConvTranspose(features, (k, k), strides=(s, s), padding="SAME", use_bias=use_bias)
  flax_layer = nn.ConvTranspose(features, (k, k), strides=(s, s), padding="SAME", use_bias=use_bias)
  key = jax.random.key(1)
  v_ours, v = ours.init(key, x), flax_layer.init(key, x)
  # Same parameter names, shapes and values from the same key: checkpoints and runs are unchanged.
  assert jax.tree.structure(v_ours) == jax.tree.structure(v)
  for a, b in zip(jax.tree.leaves(v_ours), jax.tree.leaves(v), strict=True):
    np.testing.assert_array_equal(a, b)
  if use_bias:  # a non-zero bias, so its gradient and broadcast are checked too
    v = {"params": dict(v["params"], bias=jax.random.normal(jax.random.key(2), (features,)))}
  y_ours, y_flax = ours.apply(v, x), flax_layer.apply(v, x)
  assert y_ours.shape == y_flax.shape == (shape[0], shape[1] * s, shape[2] * s, features)
  np.testing.assert_allclose(y_ours, y_flax, rtol=1e-5, atol=1e-5)
  # Gradients of a non-linear function of the output, w.r.t. the input and every parameter.
  probe = jax.random.normal(jax.random.key(3), y_flax.shape)

  def loss(layer):
    return lambda v, x: jnp.sum(jnp.sin(layer.apply(v, x)) * probe)

  g_ours = jax.jit(jax.grad(loss(ours), argnums=(0, 1)))(v, x)
  g_flax = jax.jit(jax.grad(loss(flax_layer), argnums=(0, 1)))(v, x)
  for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_flax), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


# (spatial dims, size, kernel, stride, padding): kernels smaller than, equal to and larger than the
# stride, odd sizes, 'SAME', 'VALID' and explicit (also negative) paddings.
GRID = [
  (1, 3, 4, 2, "SAME"),
  (1, 4, 3, 2, "SAME"),
  (1, 4, 1, 2, "SAME"),
  (1, 3, 2, 3, "VALID"),
  (1, 4, 4, 3, "SAME"),
  (1, 3, 3, 1, "SAME"),
  (1, 4, 3, 2, "VALID"),
  (1, 3, 4, 2, ((1, 2),)),
  (1, 4, 3, 2, ((-1, 3),)),
  (1, 3, 2, 2, ((2, -1),)),
  (2, 3, 4, 2, "SAME"),
  (2, 4, 3, 2, "VALID"),
  (2, 3, 2, 3, ((1, 0), (-1, 2))),
]


@pytest.mark.parametrize("nd,n,k,s,padding", GRID)
def test_both_forms_match_lax(nd, n, k, s, padding):
  """The phase form and the matmul form (whose transpose gives genjax's gradients) against
  `lax.conv_transpose`: values, input and kernel gradients."""
  key = jax.random.key(0)
  x = jax.random.normal(key, (2,) + (n,) * nd + (3,))
  w = jax.random.normal(jax.random.fold_in(key, 1), (k,) * nd + (3, 2))
  strides = (s,) * nd
  pads = tuple(transpose_padding(k, s, padding) for _ in range(nd)) if isinstance(padding, str) else padding
  forms = {
    "reference": lambda x, w: _reference(x, w, strides, padding),
    "phases": lambda x, w: ct._phase_form(x, w, strides, pads),
    "matmul": lambda x, w: ct._gemm_form(x, w, strides, pads),
  }
  probe = jax.random.normal(jax.random.fold_in(key, 2), forms["reference"](x, w).shape)

  @jax.jit
  def values_and_grads(x, w):
    return {
      name: (f(x, w), jax.grad(lambda x, w, f=f: jnp.sum(f(x, w) * probe), (0, 1))(x, w))
      for name, f in forms.items()
    }

  out = values_and_grads(x, w)
  y_ref, g_ref = out["reference"]
  for name in ("phases", "matmul"):
    y, g = out[name]
    assert y.shape == y_ref.shape, name
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5, err_msg=name)
    for a, b in zip(g, g_ref, strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=f"{name} gradient")


@pytest.mark.parametrize("features", [2, 40])  # both forward forms
def test_custom_derivative_in_reverse_and_forward_mode(features):
  """`conv_transpose`'s derivative rule (the matmul form) against `lax`: the gradient w.r.t. both
  arguments, w.r.t. the kernel alone (the input's tangent a symbolic zero), and `jacfwd`."""
  x = jax.random.normal(jax.random.key(0), (2, 3, 3, 4))
  w = jax.random.normal(jax.random.key(1), (4, 4, 4, features))
  probe = jax.random.normal(jax.random.key(2), (2, 6, 6, features))
  fns = {
    "ours": lambda x, w: conv_transpose(x, w, (2, 2), "SAME"),
    "lax": lambda x, w: _reference(x, w, (2, 2), "SAME"),
  }

  @jax.jit
  def derivatives(x, w):
    out = {}
    for name, f in fns.items():
      loss = lambda x, w, f=f: jnp.sum(jnp.tanh(f(x, w)) * probe)
      out[name] = (jax.grad(loss, (0, 1))(x, w), jax.grad(loss, 1)(x, w), jax.jacfwd(f, (0, 1))(x[:1, :2, :2], w))
    return out

  out = derivatives(x, w)
  for a, b in zip(jax.tree.leaves(out["ours"]), jax.tree.leaves(out["lax"]), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_transpose_padding_and_bad_input():
  assert transpose_padding(4, 2, "SAME") == (2, 2)
  assert transpose_padding(3, 2, "SAME") == (2, 1)
  assert transpose_padding(3, 2, "VALID") == (2, 2)
  with pytest.raises(ValueError, match="padding must be 'SAME', 'VALID'"):
    transpose_padding(3, 2, "FULL")
  with pytest.raises(ValueError, match=r"expects x \[B, \*2 spatial, C\], got shape \(4, 4, 3\)"):
    ConvTranspose(2, (3, 3), strides=(2, 2)).init(jax.random.key(0), jnp.zeros((4, 4, 3)))
  with pytest.raises(ValueError, match="is empty"):
    conv_transpose(jnp.zeros((1, 2, 1)), jnp.zeros((5, 1, 1)), (1,), ((-3, -3),))


@pytest.mark.parametrize("which", ["dcgan", "conv_decoder"])
def test_networks_unchanged_against_flax_conv_transpose(which, monkeypatch):
  """The DCGAN generator and the conv VAE decoder: the same parameters from the same key, outputs
  and parameter gradients as when they were built on `flax.linen.ConvTranspose`."""
  from genjax.nn import conv as conv_mod
  from genjax.nn import dcgan

  if which == "dcgan":
    make = lambda: dcgan.DCGANGenerator((16, 16, 1), (32, 16, 8))
    args, kwargs, mod = (jnp.ones((3, 5)),), {"train": True, "mutable": ["batch_stats"]}, dcgan
  else:
    make = lambda: conv_mod.ConvDecoder((8, 16), (8, 8, 2), hidden=32)
    args, kwargs, mod = (jnp.ones((3, 5)),), {}, conv_mod
  z = jax.random.normal(jax.random.key(0), args[0].shape)
  net = make()
  variables = net.init(jax.random.key(1), z, **({"train": False} if which == "dcgan" else {}))
  monkeypatch.setattr(mod, "ConvTranspose", nn.ConvTranspose)
  ref = make()
  ref_variables = ref.init(jax.random.key(1), z, **({"train": False} if which == "dcgan" else {}))
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(ref_variables), strict=True):
    np.testing.assert_array_equal(a, b)

  def loss(module, v):
    out = module.apply(v, z, **kwargs)
    out = out[0] if isinstance(out, tuple) else out
    return jnp.sum(jnp.sin(3 * out)), out

  (l1, y1), g1 = jax.jit(jax.value_and_grad(lambda v: loss(net, v), has_aux=True))(variables)
  (l2, y2), g2 = jax.jit(jax.value_and_grad(lambda v: loss(ref, v), has_aux=True))(variables)
  np.testing.assert_allclose(y1, y2, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(g1["params"]), jax.tree.leaves(g2["params"]), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
