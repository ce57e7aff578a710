"""The cached PixelCNN sampler (genjax.nn.pixelcnn_sampling) against the full-recompute reference.

Equality is checked through `fill` itself with a `draw` that hashes the bit patterns of
all K logits it is given into the value it returns: a difference in any bit of any logit
the draws are made from changes that position's value (and, through the network's
input, everything after it), so equal filled images from the two methods mean every
value was drawn from logits equal bit for bit to the naive sampler's. At these small
shapes the cached pass's own logits differ from the full pass's in the last bits (XLA
picks other kernels for small problems), so this also exercises the verification rounds
at almost every position. Separately, the cached pass's logits are checked to match the
full pass to float rounding (which is what keeps those rounds rare). The hashed values
are spread over 0..7, so the windows see busy images, not zeros; the image sizes make
the windows smaller than the image (their clamping at the edges is exercised) and the
first sampled position lies mid-row.

The family-level tests (real softmax / Bernoulli draws, temperatures, labels,
completion) are in tests/test_pixelcnn.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.nn import pixelcnn_sampling
from genjax.nn.masked import GatedPixelCNN, PixelCNN


def _hash_draw(num_values):
  """`draw(key, logits [N, K]) -> int32 [N]` from the logits' bits alone (the key is unused)."""

  def draw(key, logits):
    del key
    bits = jax.lax.bitcast_convert_type(logits, jnp.uint32)  # [N, K]
    mult = jnp.uint32(2654435761) + 2 * jnp.arange(bits.shape[-1], dtype=jnp.uint32)  # odd multipliers
    h = jnp.sum(bits * mult, axis=-1, dtype=jnp.uint32)
    h = h ^ (h >> 15)
    return (h % num_values).astype(jnp.int32)

  return draw


def _to_input(values):
  return values.astype(jnp.float32) / 3.5 - 1.0  # values 0..7 -> [-1, 1]


def _randomized(net, x, label, seed=0):
  params = net.init(jax.random.key(seed), x, label)["params"]
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  return jax.tree.unflatten(
    treedef, [p + 0.3 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
  )


CASES = [
  # plain, 1 block: context 4, windows 5 x 9 in 7 x 11 images
  pytest.param(PixelCNN, 1, 2, 7, 11, id="plain-C1-conditional"),
  pytest.param(PixelCNN, 3, 0, 7, 11, id="plain-C3", marks=pytest.mark.slow),
  # gated, 2 layers: context 4, rows of 5, horizontal windows of 5 in 7 x 9 images
  pytest.param(GatedPixelCNN, 3, 0, 7, 9, id="gated-C3"),
  pytest.param(GatedPixelCNN, 1, 2, 7, 9, id="gated-C1-conditional", marks=pytest.mark.slow),
]


def _case(cls, c, num_classes, h, w, n=3):
  depth = {"num_blocks": 1} if cls is PixelCNN else {"num_layers": 2}
  net = cls(features=6 * c, num_logits=8, num_color_channels=c, num_classes=num_classes, **depth)
  assert net.context == 4
  labels = jnp.arange(n) % num_classes if num_classes else None
  values = jnp.asarray(np.random.default_rng(0).integers(0, 8, (n, h, w, c)), jnp.int32)
  start = 2 * w * c + 3  # mid-row: the values before it are kept
  return net, _randomized(net, _to_input(values), labels), values, labels, start


@pytest.mark.parametrize("cls, c, num_classes, h, w", CASES)
def test_cached_fill_equals_naive_fill_for_a_draw_that_sees_every_logit_bit(cls, c, num_classes, h, w):
  net, params, values, labels, start = _case(cls, c, num_classes, h, w)

  def run(method):
    return pixelcnn_sampling.fill(
      net, params, jax.random.key(0), values, labels, start, _hash_draw(8), _to_input, method
    )

  cached, naive = (np.asarray(jax.jit(run, static_argnums=0)(m)) for m in ("cached", "naive"))
  n = values.shape[0]
  np.testing.assert_array_equal(cached.reshape(n, -1)[:, :start], np.asarray(values).reshape(n, -1)[:, :start])
  np.testing.assert_array_equal(cached, naive)
  # The hashed draws are not degenerate: every value 0..7 was filled in.
  assert len(np.unique(cached.reshape(n, -1)[:, start:])) == 8


@pytest.mark.parametrize("cls, c, num_classes, h, w", CASES)
def test_cached_pass_logits_match_the_full_forward_pass(cls, c, num_classes, h, w):
  """The logits each position was drawn from in one cached pass (no verification) equal the
  full forward pass of the filled image to float rounding, at every sampled position."""
  net, params, values, labels, start = _case(cls, c, num_classes, h, w)
  n, num = values.shape[0], values[0].size

  @jax.jit
  def run(values):
    seen = jnp.zeros((num, n, 8))
    variables = {"params": params}
    draw = _hash_draw(8)
    values, seen = pixelcnn_sampling._cached_pass(
      net, variables, jax.random.key(0), values, labels, start, draw, _to_input, seen
    )
    full = net.apply(variables, _to_input(values), labels).reshape(n, num, 8).transpose(1, 0, 2)
    return seen[start:], full[start:]

  seen, full = (np.asarray(a) for a in run(values))
  np.testing.assert_allclose(seen, full, rtol=1e-5, atol=1e-5 * np.abs(full).max())


def test_fill_argument_errors():
  net = GatedPixelCNN(features=4, num_layers=1, num_logits=2)
  values = jnp.zeros((1, 3, 3, 1), jnp.int32)
  params = net.init(jax.random.key(0), _to_input(values))["params"]
  args = (net, params, jax.random.key(0), values, None)
  with pytest.raises(ValueError, match="sampler must be one of \\('cached', 'naive'\\), got 'fast'"):
    pixelcnn_sampling.fill(*args, 0, _hash_draw(2), _to_input, "fast")
  with pytest.raises(ValueError, match="start = 10 is outside 0 .. 9"):
    pixelcnn_sampling.fill(*args, 10, _hash_draw(2), _to_input)
