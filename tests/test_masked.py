"""Tests for the masked convolutions, PixelCNN and GatedPixelCNN (genjax.nn.masked).

Causality is checked by gradients: for a random input x `[1, H, W, C]` the full Jacobian
of (a random projection of) the logits w.r.t. x is computed with one jitted `jacrev`
per network variant. Entry (output (i, j, c), input (i', j', c')) must be EXACTLY 0.0
unless (i', j', c') comes strictly before (i, j, c) in the raster / colour order; masked
kernel taps are exact zeros, so nothing leaks even at rounding level. Where the
architecture allows a dependence, the Jacobian is checked to be non-zero as well, which
shows the masks do not cut too much (and demonstrates the plain PixelCNN's blind spot).

Params are the networks' own random init plus small Gaussian noise on every leaf (so the
zero-initialized biases are random too). Sizes are tiny: 5x5 / 6x6 images, 6-12 channels.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.nn.masked import (
  GatedPixelCNN,
  MaskedConv,
  PixelCNN,
  mask,
  masked_conv,
  masked_conv_cm,
  vertical_mask,
)


def _key(seed):
  # 'rbg' keys compile much faster than threefry on CPU (see test_autoencoder.py).
  return jax.random.key(seed, impl="rbg")


def _params(net, x, label=None, seed=0):
  """Random params: the net's init plus N(0, 0.1^2) noise on every leaf."""
  args = (x,) if label is None else (x, label)
  params = jax.jit(net.init)(_key(seed), *args)
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda p: p + jnp.asarray(0.1 * rng.normal(size=p.shape), p.dtype), params)


def _jacobians(net, params, xs, label=None, seed=0):
  """d out / d x at each x of `xs`: numpy `[len(xs), H*W*Cout, H*W*C]` (raster order).

  Network logits `[1, H, W, C, L]` are projected onto a random vector over L, so every
  logit contributes; a plain conv output `[1, H, W, F]` is used as it is. The jacobian
  is jitted once and evaluated at several inputs: a single input can leave a few
  allowed entries at exactly zero when all ReLUs of a colour group happen to be off at
  one pixel, so "non-zero where allowed" is checked on the union over the inputs.
  """
  args = () if label is None else (label,)
  out = jax.eval_shape(lambda x: net.apply(params, x, *args), xs[0])
  proj = jnp.asarray(np.random.default_rng(seed + 1).normal(size=out.shape[-1]), jnp.float32)

  def f(x):
    y = net.apply(params, x, *args)
    if y.ndim == 5:
      y = y @ proj
    return y.reshape(-1)

  jac = jax.jit(jax.jacrev(f))
  return np.stack([np.asarray(jac(x)).reshape(-1, x.size) for x in xs])


def _images(h, w, c, n=4, seed=0):
  return [_image(h, w, c, seed + i) for i in range(n)]


def _image(h, w, c, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, size=(1, h, w, c)), jnp.float32)


def _allowed(h, w, c, out_channels=None, mask_type="A"):
  """Bool `[H*W*Cout, H*W*C]`: which inputs each output may depend on.

  Output channel o of `out_channels` lies in colour group o * C // out_channels (for a
  network, out_channels = C and the group is the colour channel itself).
  """
  out_channels = out_channels or c
  pix = np.arange(h * w)
  g_out = np.arange(out_channels) * c // out_channels
  c_in = np.arange(c)
  p_o = np.repeat(pix, out_channels)[:, None]
  g_o = np.tile(g_out, h * w)[:, None]
  p_i = np.repeat(pix, c)[None, :]
  c_i = np.tile(c_in, h * w)[None, :]
  same = (c_i < g_o) if mask_type == "A" else (c_i <= g_o)
  return (p_i < p_o) | ((p_i == p_o) & same)


def _offsets_allowed(h, w, c, offsets, centre_same):
  """Bool `[H*W*C, H*W*C]`: input pixel at (di, dj) from the output pixel in `offsets`
  (any channel), plus the same pixel for earlier channels if `centre_same`."""
  rows = []
  for i in range(h):
    for j in range(w):
      for co in range(c):
        row = np.zeros((h, w, c), bool)
        for di, dj in offsets:
          if (di, dj) != (0, 0) and 0 <= i + di < h and 0 <= j + dj < w:
            row[i + di, j + dj] = True
        if centre_same:
          row[i, j, :co] = True
        rows.append(row.reshape(-1))
  return np.stack(rows)


# --- mask construction ---------------------------------------------------------------


def test_mask_shape_and_spatial_layout():
  m = mask((5, 3), 4, 8, "B", 1)
  assert m.shape == (5, 3, 4, 8) and m.dtype == np.float32
  np.testing.assert_array_equal(m[:2], 1.0)  # rows above the centre
  np.testing.assert_array_equal(m[3:], 0.0)  # rows below
  np.testing.assert_array_equal(m[2, 0], 1.0)  # left of the centre
  np.testing.assert_array_equal(m[2, 2], 0.0)  # right of the centre


def test_mask_centre_single_channel():
  np.testing.assert_array_equal(mask((3, 3), 1, 4, "A", 1)[1, 1], 0.0)
  np.testing.assert_array_equal(mask((3, 3), 4, 4, "B", 1)[1, 1], 1.0)


def test_mask_centre_color_groups():
  # Raw RGB input (in = C = 3) to 6 features: groups [0, 0, 1, 1, 2, 2] (contiguous).
  a = mask((3, 3), 3, 6, "A", 3)[1, 1]
  b = mask((3, 3), 3, 6, "B", 3)[1, 1]
  np.testing.assert_array_equal(a, [[0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(b, [[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1]])
  # Feature -> feature: 6 in (groups [0,0,1,1,2,2]) to 3 out (groups [0,1,2]).
  np.testing.assert_array_equal(
    mask((1, 1), 6, 3, "B", 3)[0, 0], [[1, 1, 1], [1, 1, 1], [0, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 1]]
  )


def test_vertical_mask():
  m = vertical_mask((5, 5), 2, 3, include_centre_row=False)
  np.testing.assert_array_equal(m[:2], 1.0)
  np.testing.assert_array_equal(m[2:], 0.0)
  m = vertical_mask((5, 5), 2, 3, include_centre_row=True)
  np.testing.assert_array_equal(m[:3], 1.0)
  np.testing.assert_array_equal(m[3:], 0.0)


@pytest.mark.parametrize(
  "args, match",
  [
    (((3, 3), 3, 6, "C", 3), "mask_type must be 'A' or 'B'"),
    (((2, 3), 3, 6, "A", 3), "odd"),
    (((3, 4), 3, 6, "A", 3), "odd"),
    (((3, 3), 4, 6, "B", 3), "in_channels = 4 is not divisible by num_color_channels = 3"),
    (((3, 3), 3, 7, "A", 3), "out_channels = 7 is not divisible"),
  ],
)
def test_mask_errors(args, match):
  with pytest.raises(ValueError, match=match):
    mask(*args)


def test_network_argument_errors():
  x = jnp.zeros((1, 4, 4, 3))
  with pytest.raises(ValueError, match="divisible by 2 \\* num_color_channels"):
    PixelCNN(features=64, num_blocks=1, num_logits=2, num_color_channels=3).init(_key(0), x)
  with pytest.raises(ValueError, match="features = 8 is not divisible"):
    GatedPixelCNN(features=8, num_layers=1, num_logits=2, num_color_channels=3).init(_key(0), x)
  with pytest.raises(ValueError, match="pass label"):
    PixelCNN(features=6, num_blocks=1, num_logits=2, num_color_channels=3, num_classes=2).init(_key(0), x)
  with pytest.raises(ValueError, match="takes no label"):
    GatedPixelCNN(features=6, num_layers=1, num_logits=2, num_color_channels=3).init(
      _key(0), x, jnp.zeros((1,), jnp.int32)
    )


# --- single masked conv ----------------------------------------------------------------


def _full_masked_conv(x, kernel, m):
  """The definition: SAME convolution with the full kernel times the mask."""
  return jax.lax.conv_general_dilated(
    x, kernel * jnp.asarray(m), (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


MASKS = [
  *[
    (f"{t}-{k[0]}x{k[1]}-C{c}", mask(k, 6, 6, t, c))
    for t in "AB"
    for k in [(1, 1), (1, 3), (1, 7), (3, 3), (5, 3), (7, 7)]
    for c in (1, 3)
  ],
  *[(f"vertical-{k}x{k}-centre{r}", vertical_mask((k, k), 6, 6, r)) for k in (3, 7) for r in (False, True)],
]


def _assert_same_conv(new_conv, ref_conv, m, seed):
  """`new_conv(x, kernel, m)` and `ref_conv` agree in values and both gradients to float rounding,
  and the new one's gradient is exactly zero at every masked-out kernel entry; returns the new
  (value, x gradient, kernel gradient)."""
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(2, 6, 7, 6)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=m.shape), jnp.float32)
  probe = jnp.asarray(rng.normal(size=(2, 6, 7, 6)), jnp.float32)

  def values_and_grads(f):
    loss = lambda x, k: jnp.sum(f(x, k, m) * probe)  # noqa: E731
    return jax.jit(lambda x, k: (f(x, k, m), *jax.grad(loss, argnums=(0, 1))(x, k)))(x, kernel)

  new, ref = values_and_grads(new_conv), values_and_grads(ref_conv)
  for a, b in zip(new, ref, strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
  assert np.all(np.asarray(new[2])[m == 0] == 0.0)
  return new


@pytest.mark.parametrize("name, m", MASKS, ids=[n for n, _ in MASKS])
def test_masked_conv_is_the_full_masked_kernel_conv(name, m):
  """`masked_conv` (cropped to the mask's non-zero rows/columns, 1x1 as a matrix product) is
  the same linear map as the full masked kernel: values and both gradients agree to float
  rounding, and the gradient of every masked-out kernel entry is exactly zero."""
  new = _assert_same_conv(masked_conv, _full_masked_conv, m, seed=0)
  if m.any():
    assert np.all(np.asarray(new[2])[m == 1] != 0.0)


@pytest.mark.parametrize("name, m", MASKS, ids=[n for n, _ in MASKS])
def test_masked_conv_cm_is_masked_conv(name, m):
  """`masked_conv_cm` on channel-major activations `[C, B, H, W]` (one im2col product over the
  mask's taps) is `masked_conv` on NHWC ones: values and both gradients to float rounding,
  and exactly zero gradient for every masked-out kernel entry."""
  cm = lambda x, k, m: jnp.moveaxis(masked_conv_cm(jnp.moveaxis(x, -1, 0), k, m), 0, -1)  # noqa: E731
  _assert_same_conv(cm, masked_conv, m, seed=1)


@pytest.mark.parametrize(
  "c, num_classes, num_logits",
  [(1, 0, 1), (1, 3, 256), (3, 0, 4), (3, 3, 256)],
  ids=["bern", "cond256", "rgb", "rgb256"],
)
def test_pixelcnn_channel_major_is_the_nhwc_network(c, num_classes, num_logits):
  """The plain PixelCNN computed channel-major (the default for narrow streams) and in NHWC is
  the same function of the same parameters: logits and every parameter's gradient agree to
  float rounding (a narrow head stays channel-major, a 256-way one goes back to NHWC first)."""
  kw = dict(features=12, num_blocks=2, num_logits=num_logits, num_color_channels=c, num_classes=num_classes)
  cm, nhwc = PixelCNN(channel_major=True, **kw), PixelCNN(channel_major=False, **kw)
  x = _images(7, 6, c, n=3)
  x = jnp.concatenate(x, 0)
  label = jnp.array([0, 2, 1]) if num_classes else None
  params = cm.init(_key(0), x, label)["params"]
  assert jax.tree.structure(params) == jax.tree.structure(nhwc.init(_key(0), x, label)["params"])
  probe = jax.random.normal(_key(1), x.shape + (num_logits,))

  def values_and_grads(net):
    loss = lambda p: jnp.sum(net.apply({"params": p}, x, label) * probe)  # noqa: E731
    return jax.jit(lambda p: (net.apply({"params": p}, x, label), jax.grad(loss)(p)))(params)

  (y1, g1), (y2, g2) = values_and_grads(cm), values_and_grads(nhwc)
  np.testing.assert_allclose(np.asarray(y1), np.asarray(y2), rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(g1, g2, rtol=1e-4, atol=1e-5)
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g1)) > 0


# --- network reach ---------------------------------------------------------------------------


@pytest.mark.parametrize(
  "net",
  [PixelCNN(features=8, num_blocks=2, num_logits=2), GatedPixelCNN(features=8, num_layers=3, num_logits=2)],
  ids=["plain", "gated"],
)
def test_context_is_the_exact_reach(net):
  """`net.context` (used by the cached sampler) bounds what the logits at a pixel depend on:
  rows i - context .. i and columns j - context .. j + context, and is tight (the logits
  depend on some input at distance exactly context up, left and up-right)."""
  h = w = 13
  x = _image(h, w, 1)
  jac = _jacobians(net, _params(net, x), _images(h, w, 1, n=2))
  seen = np.any(jac != 0.0, axis=0).reshape(h, w, h, w)
  i, j, r = 10, 6, net.context
  rows, cols = np.nonzero(seen[i, j])
  assert rows.min() == i - r and rows.max() <= i
  assert cols.min() == j - r and cols.max() == j + r


@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("c", [1, 3])
def test_masked_conv_causal(mask_type, c):
  h = w = 6
  features = 2 * c
  net = MaskedConv(features, (5, 5), mask_type, c)
  x = _image(h, w, c)
  jac = _jacobians(net, _params(net, x), [x])[0]
  # A single (linear) layer: the Jacobian is the masked kernel itself, so it is non-zero
  # exactly where the order allows AND the tap lies in the 5x5 window.
  ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  near = (np.abs(ii.reshape(-1)[:, None] - ii.reshape(-1)[None]) <= 2) & (
    np.abs(jj.reshape(-1)[:, None] - jj.reshape(-1)[None]) <= 2
  )
  near = np.repeat(np.repeat(near, features, axis=0), c, axis=1)
  allowed = _allowed(h, w, c, features, mask_type)
  assert np.all(jac[~allowed] == 0.0)
  np.testing.assert_array_equal(jac != 0.0, allowed & near)


# --- networks --------------------------------------------------------------------------


def _plain_offsets(num_blocks, k0=7, k=3):
  """Pixel offsets the plain PixelCNN can reach: the type-A k0 x k0 window followed by
  num_blocks type-B k x k windows (Minkowski sum; 1x1 convs do not move)."""
  r0, r = k0 // 2, k // 2
  first = {(di, dj) for di in range(-r0, 0) for dj in range(-r0, r0 + 1)}
  first |= {(0, dj) for dj in range(-r0, 0)}
  step = {(di, dj) for di in range(-r, 0) for dj in range(-r, r + 1)}
  step |= {(0, dj) for dj in range(-r, 1)}
  reach = set(first)
  for _ in range(num_blocks):
    reach = {(a + c, b + d) for a, b in reach for c, d in step}
  return reach


@pytest.mark.parametrize("c, num_classes, cm", [(1, 0, True), (3, 0, True), (1, 3, False), (3, 3, True)])
def test_pixelcnn_causal(c, num_classes, cm):
  h = w = 6
  kw = dict(num_color_channels=c, num_classes=num_classes, channel_major=cm)
  net = PixelCNN(features=24, num_blocks=2, num_logits=4, **kw)
  xs = _images(h, w, c)
  label = jnp.array([2]) if num_classes else None
  jacs = _jacobians(net, _params(net, xs[0], label), xs, label)
  assert np.all(jacs[:, ~_allowed(h, w, c)] == 0.0)
  # Non-zero exactly on the reachable wedge (earlier colours of the same pixel included).
  expected = _offsets_allowed(h, w, c, _plain_offsets(2), centre_same=True)
  np.testing.assert_array_equal(np.any(jacs != 0.0, axis=0), expected)


@pytest.mark.parametrize("c, num_classes", [(1, 0), (3, 0), (3, 3)])
def test_gated_pixelcnn_causal(c, num_classes):
  # 3 layers (7x7, then two 3x3) reach 5 rows up, 5 columns either side and 5 pixels to
  # the left: all of a 6x6 image, so EVERY allowed entry must be non-zero.
  h = w = 6
  net = GatedPixelCNN(features=24, num_layers=3, num_logits=4, num_color_channels=c, num_classes=num_classes)
  xs = _images(h, w, c)
  label = jnp.array([1]) if num_classes else None
  jacs = _jacobians(net, _params(net, xs[0], label), xs, label)
  allowed = _allowed(h, w, c)
  assert np.all(jacs[:, ~allowed] == 0.0)
  np.testing.assert_array_equal(np.any(jacs != 0.0, axis=0), allowed)


def test_blind_spot_plain_but_not_gated():
  """The plain PixelCNN cannot see up-right pixels; the gated stacks can.

  Each type-B 3x3 step moves at most one column right per row up, and the 7x7 type-A
  input layer reaches at most 3 columns right of the pixel. So one row up, nothing
  further than 3 columns to the right is ever reachable, however deep the net: for the
  output at (4, 0) of a 5x5 image, input pixel (3, 4) is a blind spot, although it lies
  well inside the 15x15 box receptive field of 4 blocks. With the same number of
  spatial layers (7x7 + four 3x3) the gated net sees every earlier pixel.
  """
  h = w = 5
  xs = _images(h, w, 1)
  out = 4 * w + 0  # output pixel (4, 0)
  earlier = np.arange(out)  # pixels (0, 0) .. (3, 4)
  plain = PixelCNN(features=16, num_blocks=4, num_logits=2)
  seen = np.any(_jacobians(plain, _params(plain, xs[0]), xs) != 0.0, axis=0)
  zero = earlier[~seen[out, earlier]]
  assert [divmod(int(p), w) for p in zero] == [(3, 4)]
  gated = GatedPixelCNN(features=16, num_layers=5, num_logits=2)
  seen = np.any(_jacobians(gated, _params(gated, xs[0]), xs) != 0.0, axis=0)
  assert np.all(seen[out, earlier])
  # Last pixel too: every earlier pixel matters for the gated net.
  assert np.all(seen[-1, :-1])


# --- conditioning and shapes -----------------------------------------------------------


@pytest.mark.parametrize("cls", [PixelCNN, GatedPixelCNN])
def test_label_changes_logits(cls):
  x = _image(4, 4, 3)
  net = cls(
    features=6,
    num_logits=3,
    num_color_channels=3,
    num_classes=4,
    **({"num_blocks": 1} if cls is PixelCNN else {"num_layers": 2}),
  )
  params = _params(net, x, jnp.array([0]))
  apply = jax.jit(net.apply)
  a = apply(params, x, jnp.array([0]))
  b = apply(params, x, jnp.array([3]))
  assert np.all(np.isfinite(a)) and not np.allclose(a, b)


@pytest.mark.parametrize("num_logits", [256, 1])
@pytest.mark.parametrize("cls", [PixelCNN, GatedPixelCNN])
def test_output_shape(cls, num_logits):
  x = jnp.zeros((2, 4, 5, 3))
  label = jnp.array([0, 1])
  net = cls(
    features=6,
    num_logits=num_logits,
    num_color_channels=3,
    num_classes=2,
    **({"num_blocks": 1} if cls is PixelCNN else {"num_layers": 2}),
  )
  params = jax.eval_shape(lambda: net.init(_key(0), x, label))
  out = jax.eval_shape(lambda p: net.apply(p, x, label), params)
  chex.assert_shape(out, (2, 4, 5, 3, num_logits))
  assert out.dtype == jnp.float32
