"""The PixelCNN family: exact likelihoods, the compiled sampler, conditioning, completion."""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import genjax.data
from genjax import losses
from genjax.configs import pixelcnn as pixelcnn_config
from genjax.models.pixelcnn import PixelCNNFamily

LN2 = math.log(2.0)


def _family(**model):
  cfg = pixelcnn_config.get_config("tiny")
  for k, v in model.items():
    setattr(cfg.model, k, v)
  info, splits = genjax.data.load_dataset(cfg.data)
  return PixelCNNFamily(cfg, info), splits


@pytest.fixture(scope="module", params=["gated", "plain"])
def trained_like(request):
  """A family with random (non-zero) params and a test batch."""
  family, splits = _family(variant=request.param)
  batch = splits["test"][np.arange(6)]
  params, _ = jax.jit(family.init)(jax.random.key(0), batch)
  return family, _randomize(params), batch


def _randomize(params, seed=0):
  """Scales the weights and makes every bias non-zero: at init the biases are zero, so
  the logits of the first pixel (which sees no input) would be exact ties."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(
    treedef, [3.0 * p + 0.3 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
  )


def test_uniform_logits_give_exactly_eight_bits_per_dim():
  family, splits = _family()
  batch = splits["test"][np.arange(5)]
  params, _ = family.init(jax.random.key(0), batch)
  zero = jax.tree.map(jnp.zeros_like, params)
  out = family.evaluate(zero, {}, batch, jax.random.key(1))
  np.testing.assert_allclose(np.asarray(out["bits_per_dim"]), 8.0, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(out["nll"]), family.num_dims * math.log(256.0), rtol=1e-6)


def test_batch_likelihood_is_sum_of_per_example(trained_like):
  family, params, batch = trained_like
  values = family.to_model(jnp.asarray(batch["image"]), jax.random.key(0))
  joint = family.log_prob_values(params, values)
  chex.assert_shape(joint, (6,))
  single = [float(family.log_prob_values(params, values[i : i + 1])[0]) for i in range(6)]
  np.testing.assert_allclose(np.asarray(joint), single, rtol=1e-5)
  out = family.evaluate(params, {}, batch, jax.random.key(0))
  np.testing.assert_allclose(
    np.asarray(out["bits_per_dim"]), -np.asarray(joint) / (family.num_dims * LN2), rtol=1e-5
  )


def test_argmax_sample_is_a_fixed_point_and_low_temperature_matches(trained_like):
  family, params, _ = trained_like
  sample = jax.jit(family.sample, static_argnames=("num", "temperature"))
  greedy = np.asarray(sample(params, jax.random.key(3), num=3, temperature=0.0))
  chex.assert_shape(greedy, (3,) + family.image_shape)
  chex.assert_type(greedy, np.uint8)
  # Every value is the arg-max of the logits the model gives at its position once all
  # earlier values are in place: a property of causality plus the raster-order loop.
  logits = family.logits(params, jnp.asarray(greedy, jnp.int32))
  np.testing.assert_array_equal(np.argmax(np.asarray(logits), axis=-1), greedy)
  cold = np.asarray(sample(params, jax.random.key(4), num=3, temperature=1e-4))
  np.testing.assert_array_equal(cold, greedy)


def test_sampling_is_deterministic_per_key():
  family, splits = _family()
  batch = splits["test"][np.arange(2)]
  params, _ = family.init(jax.random.key(0), batch)
  sample = jax.jit(family.sample, static_argnames=("num", "temperature"))
  a = np.asarray(sample(params, jax.random.key(7), num=2))
  b = np.asarray(sample(params, jax.random.key(7), num=2))
  c = np.asarray(sample(params, jax.random.key(8), num=2))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


@pytest.mark.parametrize(
  "model, temperatures, complete",
  [
    ({"variant": "gated"}, (1.0, 0.0), True),
    ({"variant": "plain", "likelihood": "bernoulli", "conditional": True}, (1.0,), False),
    pytest.param({"variant": "plain"}, (1.0, 0.0), True, marks=pytest.mark.slow),
    pytest.param({"variant": "gated", "likelihood": "bernoulli"}, (1.0, 0.0), True, marks=pytest.mark.slow),
    pytest.param({"variant": "gated", "conditional": True}, (1.0, 0.0), True, marks=pytest.mark.slow),
    pytest.param(
      {"variant": "plain", "likelihood": "bernoulli", "conditional": True}, (0.0,), True, marks=pytest.mark.slow
    ),
  ],
)
def test_cached_sampler_gives_the_naive_samplers_samples(model, temperatures, complete):
  """Samples and completions are equal bit for bit, key by key (genjax.nn.pixelcnn_sampling
  explains why this holds by construction; tests/test_pixelcnn_sampling.py checks it with a
  draw that sees every bit of the logits)."""
  family, splits = _family(**model)
  batch = splits["test"][np.arange(3)]
  params, _ = family.init(jax.random.key(0), batch)
  params = _randomize(params)
  labels = jnp.array([2, 0, 1]) if family.conditional else None

  def both(fn, **kwargs):
    return [jax.jit(functools.partial(fn, sampler=m, labels=labels, **kwargs)) for m in ("cached", "naive")]

  for t in temperatures:
    cached, naive = both(family.sample, num=3, temperature=t)
    for k in range(5) if t else range(2):
      a, b = np.asarray(cached(params, jax.random.key(k))), np.asarray(naive(params, jax.random.key(k)))
      np.testing.assert_array_equal(a, b, err_msg=f"sample, temperature {t}, key {k}")
  if complete:
    cached, naive = both(family.complete)
    for k in range(2):
      a = np.asarray(cached(params, jax.random.key(k), batch["image"]))
      np.testing.assert_array_equal(a, np.asarray(naive(params, jax.random.key(k), batch["image"])))


def test_sampler_name_is_checked():
  family, splits = _family()
  params, _ = family.init(jax.random.key(0), splits["test"][np.arange(1)])
  with pytest.raises(ValueError, match="sampler must be one of \\('cached', 'naive'\\), got 'fast'"):
    family.sample(params, jax.random.key(0), 1, sampler="fast")


def test_conditioning_changes_samples_and_completion_keeps_the_top_half():
  family, splits = _family(conditional=True)
  batch = splits["test"][np.arange(4)]
  params, _ = family.init(jax.random.key(0), batch)
  params = _randomize(params)
  sample = jax.jit(family.sample, static_argnames=("num", "temperature"))
  zeros = np.asarray(sample(params, jax.random.key(1), num=4, labels=jnp.zeros(4, jnp.int32), temperature=0.0))
  ones = np.asarray(sample(params, jax.random.key(1), num=4, labels=jnp.ones(4, jnp.int32), temperature=0.0))
  assert not np.array_equal(zeros, ones)
  done = np.asarray(jax.jit(family.complete)(params, jax.random.key(2), batch["image"], batch["label"]))
  h = family.image_shape[0]
  np.testing.assert_array_equal(done[:, : h // 2], batch["image"][:, : h // 2])
  chex.assert_shape(done, batch["image"].shape)


def test_binarized_bernoulli_variant():
  family, splits = _family(likelihood="bernoulli")
  batch = splits["test"][np.arange(4)]
  params, _ = family.init(jax.random.key(0), batch)
  zero = jax.tree.map(jnp.zeros_like, params)
  out = family.evaluate(zero, {}, batch, jax.random.key(1))
  np.testing.assert_allclose(np.asarray(out["bits_per_dim"]), 1.0, rtol=1e-6)  # p = 1/2 everywhere
  s = np.asarray(family.sample(params, jax.random.key(2), 2))
  assert set(np.unique(s)) <= {0, 255}


def test_categorical_log_prob_against_numpy_and_errors():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 2, 2, 1, 5)).astype(np.float32)
  targets = rng.integers(0, 5, size=(3, 2, 2, 1))
  lp = np.asarray(losses.categorical_log_prob(jnp.asarray(targets), jnp.asarray(logits), event_ndims=3))
  log_soft = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  expected = np.take_along_axis(log_soft, targets[..., None], -1)[..., 0].reshape(3, -1).sum(-1)
  np.testing.assert_allclose(lp, expected, rtol=1e-5)
  with pytest.raises(ValueError, match="must be targets"):
    losses.categorical_log_prob(jnp.zeros((3, 2), jnp.int32), jnp.zeros((3, 5)), event_ndims=1)
  with pytest.raises(ValueError, match=r"categorical targets must lie in \[0, 4\]"):
    losses.categorical_log_prob(jnp.full((3,), 7), jnp.zeros((3, 5)), event_ndims=0)


def test_learns_on_digits():
  """A hundred steps of a tiny net on the 8x8 digits gain more than 2 bits/dim over init."""
  from tests.helpers import metrics_before_and_after_training

  config = pixelcnn_config.get_config("tiny")
  config.train.num_steps = 100
  before, after = metrics_before_and_after_training(config)
  assert before["bits_per_dim"] > 7.5  # about uniform over 256 values at init
  assert after["bits_per_dim"] < before["bits_per_dim"] - 2.0, (before, after)


def test_figures_samples_and_completion():
  from genjax.models import FigureOptions

  family, splits = _family(conditional=True)
  test = splits["test"]
  params, _ = family.init(jax.random.key(0), test[np.arange(2)])
  figures = family.figures()
  assert set(figures) == {"samples", "completion"}
  images = figures["samples"](params, {}, jax.random.key(1), test, FigureOptions(num=3, label=2))
  chex.assert_shape(images.data, (3,) + family.image_shape)
  pairs = figures["completion"](params, {}, jax.random.key(1), test, FigureOptions(num=4))
  assert pairs.kind == "pairs"
  pairs = np.asarray(pairs.data)
  chex.assert_shape(pairs, (2, 2) + family.image_shape)
  h = family.image_shape[0]
  np.testing.assert_array_equal(pairs[:, 1, : h // 2], pairs[:, 0, : h // 2])  # the upper half is kept
  assert pairs[0, 0].tolist() != pairs[1, 0].tolist()  # two different test images (class-balanced choice)
