"""`genjax.nn.conv_grads`: convolutions and dense layers whose weight gradient runs as genjax's CPU
kernel are the same functions as XLA's (values, every gradient, forward mode, vmap, second
derivatives), deterministic, and the U-Net keeps its parameters.

Speed (not tested here): `python -m benchmarks.op_report --config=configs/ddpm.py:peer`
lists the kernel's calls as their layers' `wgrad`. Measured one by one against XLA's weight
gradient (Eigen convolutions, batch 64, this 2-core Xeon, 2026-12-02): 1x1 convolutions
96->32 at 28x28 2.7x, 64->64 at 14x14 2.9x, 256->128 at 7x7 1.5x; 3x3 32->32 at 28x28 1.4x,
stride 2 1.4x; 4x4/2 from 1 channel at 64x64 2.3x; 3x3 from 64 channels or more 0.4-1.0x
(those keep XLA's: `conv_grads.MAX_WINDOWED_IN`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from genjax.nn import conv2d, conv_grads, native, unet

needs_kernel = pytest.mark.skipif(native.status() != "loaded", reason="genjax's CPU kernels are not built here")

# (x shape, kernel shape, strides, pads): 1x1, 3x3 'SAME', strided with uneven padding, a
# 4x4/2 from one channel, output widths 8, 16, 24 and 40 (every column-block size), window
# rows whose length is no multiple of the register tile, several chunks of pixels.
CASES = [
  ((2, 9, 9, 24), (1, 1, 24, 40), (1, 1), ((0, 0), (0, 0))),
  ((3, 8, 8, 5), (3, 3, 5, 16), (1, 1), ((1, 1), (1, 1))),
  ((2, 11, 9, 3), (3, 3, 3, 24), (2, 2), ((1, 1), (0, 1))),
  ((2, 12, 12, 1), (4, 4, 1, 8), (2, 2), ((1, 1), (1, 1))),
  ((1, 7, 10, 6), (2, 3, 6, 16), (3, 2), ((2, 0), (1, 2))),
  ((4, 30, 30, 7), (3, 3, 7, 8), (1, 1), ((1, 1), (1, 1))),
]


def _loss(conv, x, k, strides, pads):
  return jnp.sum(jnp.sin(conv(x, k, strides, pads)))


def _xla(x, k, strides, pads):
  return lax.conv_general_dilated(x, k, strides, pads, dimension_numbers=conv_grads.DN)


def _inputs(x_shape, k_shape, seed=0):
  kx, kk = jax.random.split(jax.random.key(seed))
  return jax.random.normal(kx, x_shape), jax.random.normal(kk, k_shape) / np.sqrt(np.prod(k_shape[:3]))


@needs_kernel
@pytest.mark.parametrize("x_shape,k_shape,strides,pads", CASES)
def test_gradients_equal_xla_and_run_the_kernel(x_shape, k_shape, strides, pads):
  x, k = _inputs(x_shape, k_shape)
  assert conv_grads.use_kernel(x, k, strides, pads)
  grads = jax.jit(jax.grad(lambda x, k: _loss(conv_grads.conv, x, k, strides, pads), argnums=(0, 1)))
  want = jax.grad(lambda x, k: _loss(_xla, x, k, strides, pads), argnums=(0, 1))(x, k)
  got = grads(x, k)
  for g, w in zip(got, want, strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(w))))
  assert "genjax_conv_wgrad" in grads.lower(x, k).compile().as_text()  # the kernel ran
  np.testing.assert_array_equal(conv_grads.conv(x, k, strides, pads), _xla(x, k, strides, pads))  # forward: XLA's


@needs_kernel
def test_forward_mode_vmap_and_second_derivatives_equal_xla():
  x_shape, k_shape, strides, pads = CASES[2]
  x, k = _inputs(x_shape, k_shape)
  f = lambda x, k: _loss(conv_grads.conv, x, k, strides, pads)  # noqa: E731
  r = lambda x, k: _loss(_xla, x, k, strides, pads)  # noqa: E731
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5 * float(jnp.max(jnp.abs(b))))  # noqa: E731
  close(jax.jvp(f, (x, k), (x, k))[1], jax.jvp(r, (x, k), (x, k))[1])
  close(jax.jacfwd(f, argnums=1)(x, k), jax.jacfwd(r, argnums=1)(x, k))
  per_example = lambda g: jax.vmap(jax.grad(g, argnums=1), (0, None))(x[:, None], k)  # noqa: E731
  close(per_example(f), per_example(r))
  hvp = lambda g: jax.jvp(jax.grad(g, argnums=1), (x, k), (x, k))[1]  # noqa: E731  forward over reverse
  close(hvp(f), hvp(r))
  rr = lambda g: jax.grad(lambda x: jnp.sum(jax.grad(g, argnums=1)(x, k) ** 2))(x)  # noqa: E731  reverse over reverse
  close(rr(f), rr(r))


@needs_kernel
def test_dense_over_pixels_equals_xla_and_is_deterministic():
  kx, kk = jax.random.split(jax.random.key(3))
  x = jax.random.normal(kx, (5, 30, 30, 24))  # 4500 rows: 16 chunks
  w = jax.random.normal(kk, (24, 40)) / 5
  grad = jax.jit(jax.grad(lambda w: jnp.sum(jnp.tanh(conv_grads.dense(x, w)))))
  want = jax.grad(lambda w: jnp.sum(jnp.tanh(x @ w)))(w)
  got = grad(w)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(want))))
  assert "genjax_conv_wgrad" in grad.lower(w).compile().as_text()
  np.testing.assert_array_equal(grad(w), got)  # fixed chunks summed in order: bit-identical repeats
  small = jnp.ones((8, 24))  # fewer rows than MIN_DENSE_ROWS: XLA's product
  assert (
    "genjax_conv_wgrad" not in jax.jit(jax.grad(lambda w: jnp.sum(conv_grads.dense(small, w)))).lower(w).as_text()
  )


# Strided convolutions whose input gradient runs by phases: 3x3/2 'SAME' (even and odd sizes),
# 4x4/2 pad 1 (the DCGAN discriminator), unequal strides and pads, a window smaller than the stride.
PHASE_CASES = [
  ((2, 10, 10, 32), (3, 3, 32, 16), (2, 2), ((0, 1), (0, 1))),
  ((2, 9, 9, 32), (3, 3, 32, 8), (2, 2), ((1, 1), (1, 1))),
  ((2, 12, 12, 40), (4, 4, 40, 24), (2, 2), ((1, 1), (1, 1))),
  ((1, 11, 8, 32), (3, 2, 32, 8), (3, 2), ((2, 0), (1, 1))),
  ((2, 9, 9, 32), (1, 1, 32, 16), (2, 2), ((0, 0), (0, 0))),
]


@pytest.mark.parametrize("x_shape,k_shape,strides,pads", PHASE_CASES)
def test_phase_input_gradient_equals_xla(x_shape, k_shape, strides, pads):
  x, k = _inputs(x_shape, k_shape, seed=5)
  assert conv_grads.use_phases(x, k, strides, pads)
  grads = jax.jit(jax.grad(lambda x, k: _loss(conv_grads.conv, x, k, strides, pads), argnums=(0, 1)))
  want = jax.grad(lambda x, k: _loss(_xla, x, k, strides, pads), argnums=(0, 1))(x, k)
  for g, w in zip(grads(x, k), want, strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(w))))
  hlo = grads.lower(x, k).compile().as_text()
  assert "lhs_dilate" not in hlo and "lhs_dilation" not in hlo  # no base-dilated convolution left
  # Direct against the transposed convolution: the same linear map as XLA's input gradient.
  ct = jax.random.normal(jax.random.key(6), _xla(x, k, strides, pads).shape)
  np.testing.assert_allclose(
    conv_grads.dgrad_phases(ct, k, x.shape, strides, pads),
    conv_grads.dgrad_reference(ct, k, x.shape, strides, pads),
    rtol=1e-5,
    atol=1e-5,
  )
  # Second derivatives and forward mode go through XLA's form.
  hvp = lambda c: jax.jvp(jax.grad(lambda x: _loss(c, x, k, strides, pads)), (x,), (x,))[1]  # noqa: E731
  np.testing.assert_allclose(hvp(conv_grads.conv), hvp(_xla), rtol=2e-5, atol=2e-5)


def test_use_phases_picks_strided_wide_inputs():
  assert not conv_grads.use_phases(jnp.zeros((1, 8, 8, 64)), jnp.zeros((3, 3, 64, 64)))  # stride 1
  assert not conv_grads.use_phases(jnp.zeros((1, 8, 8, 1)), jnp.zeros((4, 4, 1, 64)), (2, 2))  # 1 input channel
  assert conv_grads.use_phases(jnp.zeros((1, 8, 8, 64)), jnp.zeros((4, 4, 64, 8)), (2, 2), ((1, 1), (1, 1)))


def test_use_kernel_picks_narrow_float32_layers():
  x32, x64 = jnp.zeros((1, 8, 8, 32)), jnp.zeros((1, 8, 8, 64))
  loaded = native.status() == "loaded"
  assert conv_grads.use_kernel(x32, jnp.zeros((3, 3, 32, 64))) == loaded
  assert conv_grads.use_kernel(x64, jnp.zeros((1, 1, 64, 256))) == loaded  # 1x1: any width
  assert not conv_grads.use_kernel(x64, jnp.zeros((3, 3, 64, 64)))  # XLA's is as fast or faster
  assert not conv_grads.use_kernel(x32, jnp.zeros((3, 3, 32, 12)))  # output width not a multiple of 8
  assert not conv_grads.use_kernel(x32.astype(jnp.bfloat16), jnp.zeros((1, 1, 32, 64), jnp.bfloat16))


def test_unet_parameters_outputs_and_gradients_unchanged(monkeypatch):
  """The U-Net's convolutions and attention projections, now `conv2d.Conv` / `conv_grads.Dense`,
  create the parameters `flax.linen.Conv` / `Dense` created and compute the same outputs; its
  parameter gradients with the kernel equal those with XLA's weight gradients."""
  import flax.linen as nn

  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 16))
  for new, old in (
    (conv2d.Conv(32, (1, 1)), nn.Conv(32, (1, 1))),
    (conv2d.Conv(16, (3, 3), strides=(2, 2)), nn.Conv(16, (3, 3), strides=(2, 2))),
    (conv_grads.Dense(24), nn.Dense(24)),
  ):
    p_new, p_old = new.init(jax.random.key(1), x), old.init(jax.random.key(1), x)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), p_new) == jax.tree.map(lambda a: (a.shape, a.dtype), p_old)
    for a, b in zip(jax.tree.leaves(p_new), jax.tree.leaves(p_old), strict=True):
      np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(new.apply(p_old, x), old.apply(p_old, x), rtol=1e-6, atol=1e-6)

  net = unet.UNet(ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,), norm_groups=4, dropout=0.0)
  img, t = jax.random.normal(jax.random.key(2), (2, 32, 32, 1)), jnp.array([1, 5])
  params = net.init(jax.random.key(3), img, t)
  # Zero-initialized output layers would leave most weight gradients zero: randomize them all.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(4), len(leaves))
  params = jax.tree.unflatten(
    tree, [0.2 * jax.random.normal(k, a.shape) for k, a in zip(keys, leaves, strict=True)]
  )
  loss = lambda p: jnp.mean(net.apply(p, img, t) ** 2)  # noqa: E731
  step = jax.jit(jax.grad(loss))
  if native.status() == "loaded":
    assert "genjax_conv_wgrad" in step.lower(params).compile().as_text()
  got = step(params)
  monkeypatch.setattr(conv_grads, "use_kernel", lambda *a, **k: False)
  monkeypatch.setattr(conv_grads, "use_phases", lambda *a, **k: False)
  want = jax.jit(jax.grad(loss))(params)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(w))) + 1e-8)
