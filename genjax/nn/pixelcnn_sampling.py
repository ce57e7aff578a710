"""Autoregressive sampling for the networks of `genjax.nn.masked`: a cached sampler and its reference.

`fill(net, params, key, values, labels, start, draw, to_input, method)` samples the
positions `start .. P - 1` (P = H*W*C) of an int32 value array `[N, H, W, C]` in raster
order (row by row, left to right, colour channels in order within a pixel), as one
compiled program. Position i = (row * W + col) * C + ch gets
`draw(fold_in(key, i), logits)` from the network's logits `[N, K]` at i, given every
value before it.

* `method='naive'` (the reference): a `lax.fori_loop` over the positions, each step a
  forward pass of the whole image `[N, H, W, C]`; `P * H * W` pixel evaluations.
* `method='cached'`: each position's logits come from only the part of the image they
  depend on (a network's `context` bounds it: rows i - context .. i, columns
  j - context .. j + context). For `GatedPixelCNN`, whose vertical stack at a row depends
  only on rows above, the vertical stack is run once per row on the `context + 1` rows
  ending there (full width), and the horizontal stack and output head once per
  position on the `context + 1` pixels of the row ending at the position; for
  `PixelCNN`, the whole network runs once per position on the `(context + 1) x
  (2 context + 1)` window around it. Windows are clamped into the image, so a window
  edge is either the image edge (the same zero padding as the full image) or lies
  beyond the position's context. Then one full forward pass of the filled image
  verifies the result (below): about `2 P` small evaluations plus one full pass.

What is guaranteed: `cached` returns exactly the values (bit for bit) that `naive`
returns for the same arguments, by construction rather than by luck of rounding:

1. The windows see the same values as the full image wherever the logits depend on
   them, so the cached logits equal the reference logits mathematically; but XLA picks
   kernels by problem size (on XLA:CPU a 16 -> 32 channel product over fewer than 51
   rows takes another kernel than a large one), so they may differ in the last bits.
2. Verification: one forward pass of the whole filled image gives every position's
   reference logits at once, since a logit does not depend on the values at or after
   its position (masked taps are exact zeros: those values add only +-0 to sums, given
   finite activations). Where a position's cached logits are not equal to these, its
   value is drawn again from the reference logits (the same `draw` on the same `[N, K]`
   shape). At the first position whose value changes, that value is kept (everything
   before it is now the reference sample) and the cached pass runs again from the next
   position. The loop ends with `value_i = draw(key_i, reference logits_i)` at every
   position, which is what the naive sampler computes.

This rests on one assumption about the compiler: the network on the same input shape
`[N, H, W, C]` gives the same bits in the naive sampler's loop and in the verification
(the same code on the same shapes; only the surrounding program differs). The tests
(`tests/test_pixelcnn_sampling.py`, `tests/test_pixelcnn.py`) check the end result with a
`draw` that hashes every bit of the logits (any difference in any logit would show) and
with the family's softmax / Bernoulli draws at temperatures 0 and 1, conditional and
completion, for both networks; and that one cached pass's logits match the reference to
float rounding. Cost: a cached pass, one full pass, and, where the logits differ in the
last bits (on XLA:CPU: small batches), a second draw per position; a value changes only
where a draw falls within that rounding (about 1e-6 relative) of a decision boundary,
roughly once in 10^5 draws or fewer, costing one more cached pass from there. At the default config with 16 images
the cached logits are equal bit for bit and nothing is drawn twice. Memory: the logits
of every position `[H*W*C, N, K]` are kept (as large as one full pass's logits).

Requirements: `to_input` (values -> network input) is elementwise, and `draw` is a
deterministic function of its key and logits.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from genjax.nn.masked import GatedPixelCNN, PixelCNN

METHODS = ("cached", "naive")

Draw = Callable[[jax.Array, jax.Array], jax.Array]


def fill(
  net: PixelCNN | GatedPixelCNN,
  params,
  key: jax.Array,
  values: jax.Array,
  labels: jax.Array | None,
  start: int,
  draw: Draw,
  to_input: Callable[[jax.Array], jax.Array],
  method: str = "cached",
) -> jax.Array:
  """Samples positions `start .. H*W*C - 1` of `values` in raster order; returns the filled values.

  Args:
    net: the network (`PixelCNN` or `GatedPixelCNN`) whose `apply` gives logits
      `[N, H, W, C, K]` for an input `[N, H, W, C]` (and labels `[N]` if conditional).
    params: its parameters (the `'params'` collection).
    key: position i is drawn with `jax.random.fold_in(key, i)`.
    values: int32 `[N, H, W, C]`; positions before `start` are kept, later ones are
      overwritten (their values do not affect the samples).
    labels: int32 `[N]` for a conditional network, else None.
    start: the first position to sample (a Python int).
    draw: `(key, logits [N, K]) -> int32 [N]`, deterministic.
    to_input: elementwise map from the int32 values to the network's float input.
    method: 'cached' or 'naive' (the full-recompute reference); the same result.
  """
  if method not in METHODS:
    raise ValueError(f"sampler must be one of {METHODS}, got {method!r}")
  n, h, w, c = values.shape
  if not 0 <= start <= h * w * c:
    raise ValueError(f"start = {start} is outside 0 .. {h * w * c} (H*W*C of values {values.shape})")
  variables = {"params": params}
  if method == "naive":
    return _fill_naive(net, variables, key, values, labels, start, draw, to_input)
  if start == h * w * c:
    return values
  return _fill_verified(net, variables, key, values, labels, start, draw, to_input)


def _position(i, w: int, c: int):
  return i // (w * c), (i // c) % w, i % c


def _fill_naive(net, variables, key, values, labels, start, draw, to_input):
  """One full forward pass per position."""
  _, h, w, c = values.shape

  def body(i, values):
    row, col, ch = _position(i, w, c)
    logits = net.apply(variables, to_input(values), labels)[:, row, col, ch]  # [N, K]
    v = draw(jax.random.fold_in(key, i), logits)
    return values.at[:, row, col, ch].set(v)

  return lax.fori_loop(start, h * w * c, body, values)


# --- the cached pass ---------------------------------------------------------------------


def _window_logits(net, variables, values, labels, to_input, row, col, ch):
  """Logits `[N, K]` at (row, col, ch): the network on the (context + 1) x (2 context + 1)
  window that ends at `row` and is centred on `col` (clamped into the image)."""
  n, h, w, c = values.shape
  r = net.context
  wh, ww = min(h, r + 1), min(w, 2 * r + 1)
  top, left = jnp.clip(row - r, 0, h - wh), jnp.clip(col - r, 0, w - ww)
  window = lax.dynamic_slice(values, (0, top, left, 0), (n, wh, ww, c))
  return net.apply(variables, to_input(window), labels)[:, row - top, col - left, ch]


def _gated_rows(net, variables, values, labels, to_input, row):
  """The vertical stack's pre-activations at `row`, `num_layers` arrays `[N, 1, W, 2F]`,
  from the context + 1 rows ending there (clamped into the image)."""
  n, h, w, c = values.shape
  wh = min(h, net.context + 1)
  top = jnp.clip(row - net.context, 0, h - wh)
  rows = lax.dynamic_slice(values, (0, top, 0, 0), (n, wh, w, c))
  v_pres = net.apply(variables, to_input(rows), labels, method="vertical")
  return [lax.dynamic_slice_in_dim(v, row - top, 1, axis=1) for v in v_pres]


def _gated_logits(net, variables, values, v_row, labels, to_input, row, col, ch):
  """Logits `[N, K]` at (row, col, ch) from the horizontal stack on the context + 1 pixels
  of `row` ending at `col` (clamped into the image) and the vertical stack's `v_row`."""
  n, h, w, c = values.shape
  ww = min(w, net.context + 1)
  left = jnp.clip(col - net.context, 0, w - ww)
  x = lax.dynamic_slice(values, (0, row, left, 0), (n, 1, ww, c))
  v = [lax.dynamic_slice_in_dim(vr, left, ww, axis=2) for vr in v_row]
  return net.apply(variables, to_input(x), v, labels, method="horizontal")[:, 0, col - left, ch]


def _cached_pass(net, variables, key, values, labels, start, draw, to_input, seen):
  """Samples positions `start ..` (a traced int) from cached logits; records the logits
  each position was drawn from in `seen` `[P, N, K]`. Returns (values, seen)."""
  _, h, w, c = values.shape

  def step(i, logits, state):
    values, seen = state
    row, col, ch = _position(i, w, c)
    v = draw(jax.random.fold_in(key, i), logits)
    return values.at[:, row, col, ch].set(v), seen.at[i].set(logits)

  if not isinstance(net, GatedPixelCNN):

    def body(i, state):
      row, col, ch = _position(i, w, c)
      return step(i, _window_logits(net, variables, state[0], labels, to_input, row, col, ch), state)

    return lax.fori_loop(start, h * w * c, body, (values, seen))

  row_size = w * c

  def row_body(row, state):
    v_row = _gated_rows(net, variables, state[0], labels, to_input, row)

    def pos_body(j, state):
      col, ch = j // c, j % c
      logits = _gated_logits(net, variables, state[0], v_row, labels, to_input, row, col, ch)
      return step(row * row_size + j, logits, state)

    return lax.fori_loop(jnp.maximum(start - row * row_size, 0), row_size, pos_body, state)

  return lax.fori_loop(start // row_size, h, row_body, (values, seen))


# --- verification ------------------------------------------------------------------------


def _fill_verified(net, variables, key, values, labels, start, draw, to_input):
  """Cached passes, each checked against one full forward pass; see the module docstring."""
  n, h, w, c = values.shape
  num = h * w * c
  logits = jax.eval_shape(lambda v: net.apply(variables, to_input(v), labels), values)
  seen = jnp.zeros((num, n, logits.shape[-1]), logits.dtype)
  positions = jnp.arange(num)

  def next_differing(differs, p):
    """The first position >= p whose cached logits differ from the reference (num if none)."""
    later = differs & (positions >= p)
    return jnp.where(jnp.any(later), jnp.argmax(later), num)

  def round_body(state):
    values, seen, s, _ = state
    values, seen = _cached_pass(net, variables, key, values, labels, s, draw, to_input, seen)
    exact = net.apply(variables, to_input(values), labels).reshape(n, num, -1).transpose(1, 0, 2)
    differs = jnp.any(exact != seen, axis=(1, 2))
    flat = values.reshape(n, num)

    def check(carry):  # re-draw the next differing position from the reference logits
      p, _, _ = carry
      v = draw(jax.random.fold_in(key, p), exact[p])
      wrong = jnp.any(v != flat[:, p])
      return jnp.where(wrong, p, next_differing(differs, p + 1)), wrong, v

    p, wrong, v = lax.while_loop(
      lambda carry: (carry[0] < num) & ~carry[1],
      check,
      (next_differing(differs, s), jnp.bool_(False), jnp.zeros((n,), jnp.int32)),
    )
    # The first wrong value (if any; else p = num and nothing is set) is replaced by the
    # reference draw, and the next round resamples the positions after it.
    values = flat.at[:, p].set(v, mode="drop").reshape(values.shape)
    return values, seen, p + 1, ~wrong

  values, *_ = lax.while_loop(lambda state: ~state[3], round_body, (values, seen, start, jnp.bool_(False)))
  return values
