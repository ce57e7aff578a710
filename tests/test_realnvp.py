"""RealNVP: every bijection inverts and has the brute-force log-determinant; bits/dim by hand;
the family's sampling, encoding and interpolation; a 2-D toy's density integrates to one."""

from __future__ import annotations

import logging
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import genjax.data
from genjax import losses
from genjax.configs import realnvp as realnvp_config
from genjax.eval import render, toy_density
from genjax.models import FigureOptions
from genjax.models.base import PICTURE_POINTS
from genjax.models.realnvp import RealNVPFamily
from genjax.nn import flows

LN2 = math.log(2.0)


def _randomize(tree, seed=0, scale=0.3):
  """Non-zero weights everywhere: at init the coupling nets' last layers are zero (identity maps)."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(
    treedef, [p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
  )


def _brute_log_det(fn, x):
  """`log|det J|` of `fn` applied to each example of `x` `[B, ...]` alone, from `jax.jacfwd`.

  `fn` maps a batch to a batch and must treat examples independently (eval mode).
  """

  def one(xi):
    jac = jax.jacfwd(lambda v: fn(v.reshape((1,) + xi.shape)).reshape(-1))(xi.reshape(-1))
    return jnp.linalg.slogdet(jac)[1]

  return jax.jit(jax.vmap(one))(x)


def _check_bijection(module, x, momentum_zero=True):
  """Inverse(forward) == x and the log-det equals the brute force, in eval and train modes.

  Train mode uses the batch statistics; with momentum 0 the returned running statistics
  are those batch statistics, so the eval-mode map with them must reproduce the train-mode
  output exactly, and its Jacobian (a per-example map) checks the train-mode log-det.
  """
  variables = module.init(jax.random.key(0), x, True, method="forward")
  variables = {
    "params": _randomize(variables["params"]),
    **{k: _randomize(v, 1, 0.1) for k, v in variables.items() if k != "params"},
  }
  if "batch_stats" in variables:  # positive variances
    variables["batch_stats"] = jax.tree.map(jnp.abs, variables["batch_stats"])

  @jax.jit
  def fwd(v, xs):
    return module.apply(v, xs, False, method="forward")

  y, log_det = fwd(variables, x)
  np.testing.assert_allclose(module.apply(variables, y, method="inverse"), x, atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(log_det, _brute_log_det(lambda v: fwd(variables, v)[0], x), atol=1e-3, rtol=1e-4)

  (y_train, ld_train), updates = jax.jit(
    lambda v, xs: module.apply(v, xs, True, method="forward", mutable=["batch_stats"])
  )(variables, x)
  batch_vars = {**variables, **updates}
  y_eval, ld_eval = fwd(batch_vars, x)
  np.testing.assert_allclose(y_eval, y_train, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(ld_eval, ld_train, atol=1e-4, rtol=1e-5)
  np.testing.assert_allclose(ld_train, _brute_log_det(lambda v: fwd(batch_vars, v)[0], x), atol=1e-3, rtol=1e-4)
  np.testing.assert_allclose(module.apply(batch_vars, y_train, method="inverse"), x, atol=1e-4, rtol=1e-4)
  return log_det


def _images(shape=(3, 4, 4, 2), seed=0):
  return jax.random.normal(jax.random.key(seed), shape)


def test_squeeze_is_a_volume_preserving_permutation():
  x = _images((2, 4, 6, 3))
  y = flows.squeeze(x)
  assert y.shape == (2, 2, 3, 12)
  np.testing.assert_array_equal(flows.unsqueeze(y), x)
  np.testing.assert_array_equal(np.sort(np.asarray(y).ravel()), np.sort(np.asarray(x).ravel()))
  # Channel block k of output pixel (i, j) is input pixel (2i + k // 2, 2j + k % 2).
  np.testing.assert_array_equal(y[:, 1, 2, 3:6], x[:, 2, 5, :])
  np.testing.assert_allclose(_brute_log_det(flows.squeeze, x[:1]), 0.0, atol=1e-6)
  with pytest.raises(ValueError, match="even height and width"):
    flows.squeeze(jnp.zeros((1, 3, 4, 1)))


@pytest.mark.parametrize("mask,parity", [("checkerboard", 0), ("checkerboard", 1), ("channel", 0), ("channel", 1)])
def test_image_coupling_inverts_with_exact_log_det(mask, parity):
  layer = flows.AffineCoupling(mask, parity=parity, features=4, num_blocks=1)
  log_det = _check_bijection(layer, _images())
  assert np.all(np.abs(np.asarray(log_det)) > 1e-3)  # a real (non-identity) scaling was tested


@pytest.mark.parametrize("parity", [0, 1])
def test_channel_coupling_inverts_with_exact_log_det(parity):
  _check_bijection(flows.ChannelCoupling(parity=parity, features=4, num_blocks=1), _images())


def test_vector_coupling_and_batch_norm_invert_with_exact_log_det():
  x = jax.random.normal(jax.random.key(1), (5, 2)) * 2.0 + 1.0
  _check_bijection(flows.AffineCoupling("alternate", parity=1, hidden=(8,)), x)
  _check_bijection(flows.FlowBatchNorm(momentum=0.0), x)
  log_det = _check_bijection(flows.FlowBatchNorm(momentum=0.0), _images())
  assert np.ptp(np.asarray(log_det)) < 1e-5  # the same affine map for every example


def test_batch_norm_running_statistics():
  bn = flows.FlowBatchNorm(momentum=0.75)
  x = _images((8, 2, 2, 3)) * 3.0 + 2.0
  v = bn.init(jax.random.key(0), x, True, method="forward")
  np.testing.assert_array_equal(v["batch_stats"]["mean"], 0.0)  # init does not update
  (y, _), upd = bn.apply(v, x, True, method="forward", mutable=["batch_stats"])
  flat = np.asarray(x).reshape(-1, 3)
  np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.25 * flat.mean(0), rtol=1e-5)
  np.testing.assert_allclose(upd["batch_stats"]["var"], 0.75 + 0.25 * flat.var(0), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(y).reshape(-1, 3).mean(0), 0.0, atol=1e-5)  # batch stats used
  np.testing.assert_allclose(np.asarray(y).reshape(-1, 3).std(0), 1.0, atol=1e-3)


@pytest.mark.parametrize("num_scales,shape", [(2, (2, 4, 4, 1)), (3, (2, 8, 8, 1))])
def test_multiscale_flow_inverts_with_exact_log_det(num_scales, shape):
  flow = flows.MultiScaleFlow(num_scales=num_scales, features=4, num_blocks=1, bn_momentum=0.0)
  x = _images(shape)
  variables = flow.init(jax.random.key(0), x, True, method="forward")
  variables = {"params": _randomize(variables["params"], scale=0.1), "batch_stats": variables["batch_stats"]}
  (z, ld_train), upd = flow.apply(variables, x, True, method="forward", mutable=["batch_stats"])
  assert z.shape == (shape[0], math.prod(shape[1:]))
  batch_vars = {**variables, **upd}
  z_eval, ld_eval = flow.apply(batch_vars, x, False, method="forward")
  np.testing.assert_allclose(z_eval, z, atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(ld_eval, ld_train, atol=1e-3, rtol=1e-5)
  fwd = lambda v: flow.apply(batch_vars, v, False, method="forward")[0]
  np.testing.assert_allclose(ld_train, _brute_log_det(fwd, x), atol=2e-3, rtol=1e-4)
  np.testing.assert_allclose(flow.apply(batch_vars, z, shape[1:], method="inverse"), x, atol=1e-4)
  assert [s for s in flows.multiscale_shapes((28, 28, 1), 3)] == [(14, 14, 2), (7, 7, 4), (7, 7, 4)]


def test_logit_transform_inverts_with_exact_log_det():
  x = jax.random.uniform(jax.random.key(0), (3, 2, 2, 1))
  y, log_det = losses.logit_transform(x, 0.05, event_ndims=3)
  np.testing.assert_allclose(losses.logit_transform_inverse(y, 0.05), x, atol=1e-6)
  np.testing.assert_allclose(
    log_det, _brute_log_det(lambda v: losses.logit_transform(v, 0.05, event_ndims=3)[0], x), rtol=1e-5
  )
  with pytest.raises(ValueError, match="alpha"):
    losses.logit_transform(x, 0.5, event_ndims=3)


def test_bits_per_dim_on_hand_computed_cases():
  # The uniform density on [0, 1]^D: log p = 0, and every 8-bit value has probability 1/256.
  np.testing.assert_allclose(losses.dequantized_bits_per_dim(jnp.zeros(3), 784), 8.0, rtol=1e-7)
  # Two pixels at 0.5 under alpha = 0.05: logit(0.5) = 0, dy/dx = 0.9 / 0.25 = 3.6 per pixel,
  # an identity flow, z = 0: -log p(x) = log(2 pi) - 2 log 3.6 = 1.837877 - 2.561868
  # = -0.723991 nats, and (-0.723991 + 2 log 256) / (2 log 2) = 10.366364 / 1.386294
  # = 7.477751 bits/dim.
  y, log_det = losses.logit_transform(jnp.full((1, 2), 0.5), 0.05, event_ndims=1)
  np.testing.assert_allclose(log_det, [2 * math.log(3.6)], rtol=1e-6)
  nll = losses.flow_nll(y, log_det, event_ndims=1)
  np.testing.assert_allclose(nll, [-0.723991], rtol=1e-5)
  np.testing.assert_allclose(losses.dequantized_bits_per_dim(nll, 2), [7.477751], rtol=1e-6)


# --------------------------------------------------------------------------- the family


@pytest.fixture(scope="module")
def image_family():
  cfg = realnvp_config.get_config("tiny")
  info, splits = genjax.data.load_dataset(cfg.data)
  family = RealNVPFamily(cfg, info)
  batch = splits["test"][np.arange(6)]
  params, model_state = family.init(jax.random.key(0), batch)
  params = _randomize(params, scale=0.05)
  _, (_, model_state) = jax.jit(family.loss)(params, model_state, batch, jax.random.key(1))  # real stats
  return family, params, model_state, batch


def test_family_likelihood_is_the_change_of_variables(image_family):
  family, params, model_state, batch = image_family
  y = genjax.data.preprocess.dequantize_uniform(jax.random.key(2), batch["image"][:2])
  log_p, _ = family.log_prob(params, model_state, y)
  full = lambda v: family.flow_forward(params, model_state, losses.logit_transform(v, 0.05, event_ndims=3)[0])[0]
  z = full(y)
  expect = losses.standard_normal_log_prob(z, event_ndims=1) + _brute_log_det(full, y)
  np.testing.assert_allclose(log_p, expect, rtol=1e-4, atol=1e-2)
  out = family.evaluate(params, model_state, batch, jax.random.key(2))
  np.testing.assert_allclose(out["bits_per_dim"][:2], (-log_p + 64 * math.log(256)) / (64 * LN2), rtol=1e-5)
  np.testing.assert_allclose(out["nll"], out["bits_per_dim"] * 64 * LN2, rtol=1e-5)


def test_encode_decode_sample_and_interpolate(image_family):
  family, params, model_state, batch = image_family
  images = jnp.asarray(batch["image"])
  z = family.encode(params, model_state, images)
  assert z.shape == (6, 64)
  np.testing.assert_array_equal(family.decode(params, model_state, z), images)  # bin centres round-trip
  rows = family.interpolate(params, model_state, images[:2], images[2:4], num_steps=5)
  assert rows.shape == (2, 5, 8, 8, 1) and rows.dtype == jnp.uint8
  np.testing.assert_array_equal(rows[:, 0], images[:2])
  np.testing.assert_array_equal(rows[:, -1], images[2:4])
  s1 = family.sample(params, model_state, jax.random.key(5), 4)
  s2 = family.generate(params, model_state, jax.random.key(5), 4)  # sampling.temperature = 1
  assert s1.shape == (4, 8, 8, 1) and s1.dtype == jnp.uint8
  np.testing.assert_array_equal(s1, s2)
  cold = family.sample(params, model_state, jax.random.key(5), 2, temperature=0.0)
  np.testing.assert_array_equal(cold, family.decode(params, model_state, jnp.zeros((2, 64))))
  with pytest.raises(ValueError, match="temperature"):
    family.sample(params, model_state, jax.random.key(5), 2, temperature=-1.0)


def test_samples_figure_is_one_compiled_program(image_family, caplog):
  """`experiments.sample --kind=samples` compiles `generate` whole: run op by op, the flow's
  inverse compiled one small program per operation (160 for the tiny preset)."""
  family, params, model_state, _ = image_family
  with jax.log_compiles(True), caplog.at_level(logging.WARNING):
    figure = family.figure_samples(params, model_state, jax.random.key(5), None, FigureOptions(num=4))
  compiled = [r.getMessage() for r in caplog.records if "Finished XLA compilation" in r.getMessage()]
  assert len(compiled) <= 2 and any("jit(generate)" in m for m in compiled), compiled
  assert figure.kind == "images" and figure.data.shape == (4, 8, 8, 1) and figure.data.dtype == jnp.uint8


def test_toy_density_integrates_to_one_and_pictures():
  cfg = realnvp_config.get_config("ring8,toy_tiny")
  info, splits = genjax.data.load_dataset(cfg.data)
  family = RealNVPFamily(cfg, info)
  batch = splits["train"][np.arange(128)]
  params, model_state = family.init(jax.random.key(0), batch)
  params = _randomize(params, scale=0.05)
  _, (_, model_state) = family.loss(params, model_state, batch, jax.random.key(1))
  log_p, area = family.grid_log_prob(params, model_state, -10.0, 10.0, 500)
  assert abs(toy_density.grid_integral(log_p, area) - 1.0) < 0.02
  figure = family.figures()["density"](params, model_state, None, None, FigureOptions(extent=(-3.0, 3.0)))
  assert figure.kind == "density" and figure.data.shape == (256, 256) and figure.extent == (-3.0, 3.0)
  picture = render.picture(figure)
  assert picture.dtype == np.uint8 and picture.min() == 0
  grid = family.sample_grid(params, model_state, jax.random.key(0), batch, 1)
  assert grid.kind == "points" and grid.data.shape == (PICTURE_POINTS, 2)
  assert family.generate(params, model_state, jax.random.key(0), 7).shape == (7, 2)


def test_bad_configs_give_clear_errors():
  cfg = realnvp_config.get_config("tiny")
  info, _ = genjax.data.load_dataset(cfg.data)
  cfg.model.num_scales = 5
  with pytest.raises(ValueError, match="num_scales=5"):
    RealNVPFamily(cfg, info)
  cfg = realnvp_config.get_config("tiny")
  cfg.model.alpha = 0.7
  with pytest.raises(ValueError, match=r"model.alpha=0.7 is not valid: expected a number in \[0, 0.5\)"):
    RealNVPFamily(cfg, info)
