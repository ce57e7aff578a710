"""The flow-matching family against closed forms: Gaussian likelihoods and samples, the standard
normal's bits/dim, the CFM loss's expectation; its figures; and the unchanged command line.

The network is replaced by exact velocity fields (`flow_matching.gaussian_velocity`) where a
closed form needs one: the family's data handling, scaling, dequantization correction,
divergence and solver wiring are what is tested, end to end through its public methods.
"""

from __future__ import annotations

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import genjax.data
from genjax import flow_matching as fm
from genjax.models import FigureOptions
from genjax.models.flow_matching import TIME_SCALE, FlowMatchingFamily
from genjax.schema import ConfigError
from tests.helpers import run_module, tiny_config

MEAN = np.array([1.0, -0.6])  # data space
COV = np.array([[0.5, 0.3], [0.3, 1.2]])  # correlated: the field's Jacobian is not diagonal


def _family(preset="tiny", **overrides):
  """The family of `configs/flow_matching.py:<preset>` with dotted overrides (`model.` by default)."""
  cfg = tiny_config("flow_matching", preset, **{k if "." in k else f"model.{k}": v for k, v in overrides.items()})
  info, splits = genjax.data.load_dataset(cfg.data)
  return FlowMatchingFamily(cfg, info), splits


def _force_velocity(family, v_fn):
  """Replaces the network by `v_fn(x, t)` (model space) in every method of this family object."""
  family.velocity_fn = lambda params, train=False, key=None: v_fn


def _gaussian_field(family):
  """The exact marginal velocity, in model space, of data `N(MEAN, COV)` scaled by `model.data_scale`."""
  s = family.cfg.data_scale
  return fm.gaussian_velocity(family.path, jnp.asarray(MEAN / s), jnp.asarray(COV / s**2))


# --------------------------------------------------------------------------- likelihood


@pytest.mark.parametrize("path", ["linear", "cosine"])
def test_vector_nll_with_the_exact_velocity_is_the_gaussian_density_of_the_unscaled_data(path):
  family, _ = _family("toy,tiny", path=path, **{"eval.likelihood_steps": 32})
  assert family.cfg.data_scale == 2.0 and family.divergence == "exact"  # vectors: exact divergence by default
  _force_velocity(family, _gaussian_field(family))
  x = np.random.default_rng(0).multivariate_normal(MEAN, COV, size=6).astype(np.float32)
  out = jax.jit(lambda b, k: family.evaluate(None, {}, b, k, likelihood=True))({"x": x}, jax.random.key(0))
  assert set(out) == {"cfm_loss", "nll"}  # no bits/dim for vectors
  expected = -scipy.stats.multivariate_normal(MEAN, COV).logpdf(x)  # nats of the unscaled data
  np.testing.assert_allclose(np.asarray(out["nll"]), expected, rtol=1e-4, atol=1e-4)
  # Without the D log(scale) term the number would be off by 2 log 2 = 1.39 nats.
  assert np.all(np.abs(np.asarray(out["nll"]) - (expected - 2 * math.log(2.0))) > 1.0)


def test_zero_velocity_gives_the_standard_normals_bits_per_dim_with_the_dequantization_term():
  family, splits = _family()
  batch = splits["test"][np.arange(4)]
  params, _ = family.init(jax.random.key(0), batch)
  key = jax.random.key(3)

  @jax.jit
  def run(params, batch, key):
    y = family.to_model(batch, jax.random.split(key, 3)[0])  # evaluate's dequantization (its documented split)
    v = family.velocity_fn(params)(y, jnp.full((4,), 0.5))
    return y, v, family.evaluate(params, {}, batch, key, likelihood=True)

  # The U-Net's output convolution is zero-initialized: the fresh network's velocity is exactly 0,
  # so the flow is the identity and p = N(0, I) in model space (y in [-1, 1]).
  y, v, out = run(params, batch, key)
  assert float(jnp.max(jnp.abs(v))) == 0.0
  assert family.divergence == "hutchinson" and set(out) == {"cfm_loss", "nll", "bits_per_dim"}
  d = 64
  y = np.asarray(y, np.float64).reshape(4, -1)
  log_p = -0.5 * d * math.log(2 * math.pi) - 0.5 * np.sum(y**2, axis=1)
  nll = -log_p + d * math.log(128.0)  # each 8-bit value's bin has width 2/256 in [-1, 1]
  np.testing.assert_allclose(np.asarray(out["nll"]), nll, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(out["bits_per_dim"]), nll / (d * math.log(2.0)), rtol=1e-5)
  # Key-free check: y lies in each pixel's bin [x / 128 - 1, (x + 1) / 128 - 1), which bounds |y|^2.
  x = np.asarray(batch["image"], np.float64).reshape(4, -1)
  lo, hi = x / 128 - 1, (x + 1) / 128 - 1
  sq_min = np.where((lo <= 0) & (hi >= 0), 0.0, np.minimum(lo**2, hi**2)).sum(1)
  sq_max = np.maximum(lo**2, hi**2).sum(1)
  bpd = np.asarray(out["bits_per_dim"])
  to_bpd = lambda sq: (0.5 * d * math.log(2 * math.pi) + 0.5 * sq + d * math.log(128.0)) / (d * math.log(2.0))
  assert np.all(to_bpd(sq_min) - 1e-5 <= bpd) and np.all(bpd <= to_bpd(sq_max) + 1e-5)


def test_image_bits_per_dim_with_hutchinson_is_the_gaussian_closed_form():
  """Data N(m, diag(s^2)) over the 64 pixels: the marginal field's Jacobian is diagonal, where one
  Rademacher probe is exact, so the family's bits/dim equal the closed form to float precision."""
  family, splits = _family(**{"eval.likelihood_steps": 32})
  batch = splits["test"][np.arange(3)]
  d = 64
  rng = np.random.default_rng(1)
  mean, var = rng.uniform(-0.5, 0.5, d), rng.uniform(0.05, 0.6, d)
  gauss = fm.gaussian_velocity(family.path, jnp.asarray(mean), jnp.diag(jnp.asarray(var)))
  _force_velocity(family, lambda x, t: gauss(x.reshape(x.shape[0], -1), t).reshape(x.shape))
  key = jax.random.key(7)
  out = jax.jit(lambda b, k: family.evaluate(None, {}, b, k, likelihood=True))(batch, key)
  y = np.asarray(family.to_model(batch, jax.random.split(key, 3)[0]), np.float64).reshape(3, -1)
  log_p = scipy.stats.norm(mean, np.sqrt(var)).logpdf(y).sum(1)
  expected = (-log_p + d * math.log(128.0)) / (d * math.log(2.0))
  np.testing.assert_allclose(np.asarray(out["bits_per_dim"]), expected, rtol=2e-5)


# --------------------------------------------------------------------------- loss, sampling


@pytest.mark.parametrize("path", ["linear", "cosine"])
def test_cfm_loss_of_a_zero_field_is_the_targets_second_moment(path):
  """v = 0 (the fresh MLP's zero-initialized output): the loss is E|alpha'_t x_1 + sigma'_t x_0|^2 / D, uniform t.

  Linear: E|x_1|^2 / D + 1. Cosine: (pi/2)^2 (E|x_1|^2 / D + 1) / 2 (E cos^2 = E sin^2 = 1/2).
  """
  family, splits = _family("toy,tiny", path=path)
  batch = splits["train"][np.arange(2048)]
  params, _ = family.init(jax.random.key(0), batch)
  m2 = float(np.mean((batch["x"] / family.cfg.data_scale) ** 2))
  expected = m2 + 1.0 if path == "linear" else (math.pi / 2) ** 2 * (m2 + 1.0) / 2
  loss = jax.jit(family.loss)
  values = [float(loss(params, {}, batch, jax.random.key(i))[0]) for i in range(4)]
  # 4 x 2048 examples: the standard error of the mean is below 0.02 (linear) / 0.04 (cosine).
  assert np.mean(values) == pytest.approx(expected, abs=0.08), (values, expected)
  per_example = family.evaluate(params, {}, batch, jax.random.key(9))["cfm_loss"]
  assert per_example.shape == (2048,) and float(jnp.mean(per_example)) == pytest.approx(expected, abs=0.15)


def test_sampling_with_the_exact_velocity_draws_the_gaussian_and_temperature_zero_its_mean():
  family, _ = _family("toy,tiny", **{"sampling.num_steps": 20})
  _force_velocity(family, _gaussian_field(family))
  x = np.asarray(jax.jit(family.generate, static_argnames="num")(None, {}, jax.random.key(2), num=4000))
  assert x.shape == (4000, 2) and x.dtype == np.float32
  se = np.sqrt(np.diag(COV) / 4000)
  assert np.all(np.abs(x.mean(0) - MEAN) < 4 * se), (x.mean(0), MEAN)
  np.testing.assert_allclose(np.cov(x.T), COV, atol=0.08)
  # Temperature 0 follows the flow of the origin, which ends at the mean (the flow map is affine).
  cold, _ = _family("toy,tiny", **{"sampling.num_steps": 20, "sampling.temperature": 0.0})
  _force_velocity(cold, _gaussian_field(cold))
  np.testing.assert_allclose(np.asarray(cold.generate(None, {}, jax.random.key(2), 3)), [MEAN] * 3, atol=2e-4)
  with pytest.raises(ValueError, match="unconditional"):
    family.generate(None, {}, jax.random.key(2), 3, labels=jnp.zeros(3, jnp.int32))


def test_network_time_input_and_image_bins():
  family, splits = _family()
  batch = splits["test"][np.arange(2)]
  seen = []
  family.net = type("Spy", (), {"apply": lambda self, v, x, t, train, rngs=None: seen.append(t) or x})()
  family.velocity_fn(None)(jnp.zeros((2, 8, 8, 1)), jnp.array([0.25, 1.0]))
  np.testing.assert_allclose(np.asarray(seen[0]), [0.25 * TIME_SCALE, TIME_SCALE])
  # Dequantization then to_data gives the images back, bit for bit (floor of the bin).
  y = family.to_model(batch, jax.random.key(0))
  assert float(jnp.min(y)) >= -1.0 and float(jnp.max(y)) < 1.0
  np.testing.assert_array_equal(np.asarray(family.to_data(y)), batch["image"])


# --------------------------------------------------------------------------- figures, config


def test_trajectory_figure_ends_at_the_sample_and_density_figure_is_the_closed_form():
  family, splits = _family(**{"sampling.num_steps": 4, "sampling.trajectory_every": 2})
  params, _ = family.init(jax.random.key(0), splits["test"][np.arange(2)])
  leaves, tree = jax.tree.flatten(params)  # perturb the zero-initialized output: a non-trivial flow
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params = jax.tree.unflatten(
    tree, [p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
  )
  key = jax.random.key(4)
  figure = family.figures()["trajectory"](params, {}, key, splits["test"], FigureOptions(num=3))
  images = np.asarray(figure.data).reshape(3, 3, 8, 8, 1)  # rows: noise, after 2 steps, after 4
  assert figure.ncol == 3 and figure.data.dtype == jnp.uint8
  generate = jax.jit(family.generate, static_argnames="num")
  np.testing.assert_array_equal(images[:, -1], np.asarray(generate(params, {}, key, num=3)))
  noise = jax.random.normal(key, (3, 8, 8, 1))
  np.testing.assert_array_equal(images[:, 0], np.asarray(family.to_data(jnp.clip(noise, -1, 1))))
  assert not np.array_equal(images[:, 0], images[:, -1])
  assert set(family.figures()) == {"samples", "trajectory"}
  # 2-D toys: the density picture is log p of the unscaled data (exact divergence).
  toy, _ = _family("toy,tiny", **{"eval.likelihood_steps": 32})
  assert set(toy.figures()) == {"samples", "density"}
  _force_velocity(toy, _gaussian_field(toy))
  log_p = np.asarray(jax.jit(toy.grid_log_prob, static_argnums=(1, 2, 3))(None, -3.0, 3.0, 6))
  centres = -3.0 + (np.arange(6) + 0.5)
  gx, gy = np.meshgrid(centres, centres, indexing="xy")
  expected = scipy.stats.multivariate_normal(MEAN, COV).logpdf(np.stack([gx, gy], -1))
  np.testing.assert_allclose(log_p, expected, rtol=1e-4, atol=1e-4)
  picture = toy.figures()["density"](None, {}, key, None, FigureOptions(extent=(-3.0, 3.0)))
  assert picture.kind == "density" and picture.data.shape == (128, 128) and picture.extent == (-3.0, 3.0)


def test_config_errors_name_the_key():
  with pytest.raises(ConfigError, match=r"^model.sigma_min=0.1 is not valid: expected 0 for the cosine path"):
    _family(path="cosine", sigma_min=0.1)
  with pytest.raises(ConfigError, match=r"^sampling.trajectory_every=3 is not valid: expected 0 or a divisor"):
    _family(**{"sampling.trajectory_every": 3})
  with pytest.raises(ConfigError, match=r"^eval.divergence='trace' is not valid: expected one of 'auto'"):
    _family(**{"eval.divergence": "trace"})
  with pytest.raises(ConfigError, match=r"^sampling.solver='dopri5' is not valid"):
    _family(**{"sampling.solver": "dopri5"})


# --------------------------------------------------------------------------- the command line


def test_tiny_preset_trains_evaluates_and_samples_through_the_unchanged_commands(tmp_path):
  workdir = str(tmp_path / "run")
  cfg = "--config=configs/flow_matching.py:tiny"
  steps = ["--config.train.num_steps=4", "--config.train.eval_every=4", "--config.train.checkpoint_every=4"]
  p = run_module("experiments.train", cfg, f"--workdir={workdir}", *steps, "--config.train.sample_every=4")
  assert p.returncode == 0, p.stderr[-3000:]
  assert os.path.exists(os.path.join(workdir, "samples", "step_0000004.png"))
  p = run_module("experiments.evaluate", cfg, f"--workdir={workdir}")
  assert p.returncode == 0, p.stderr[-3000:]
  result = json.loads(p.stdout.strip().splitlines()[-1])
  assert result["family"] == "flow_matching" and result["likelihood"] is True and result["step"] == 4
  assert result["num_examples"] == 20  # eval.likelihood_examples of the tiny preset, class-balanced
  assert 0 < result["bits_per_dim"] < 12 and np.isfinite(result["cfm_loss"])
  assert result["nll"] == pytest.approx(result["bits_per_dim"] * 64 * math.log(2.0), rel=1e-5)
  out = str(tmp_path / "trajectory.png")  # `samples` is the train loop's grid above
  p = run_module("experiments.sample", cfg, f"--workdir={workdir}", "--kind=trajectory", "--num=4", f"--out={out}")
  assert p.returncode == 0, p.stderr[-3000:]
  assert os.path.getsize(out) > 0


def test_toy_preset_sample_statistics_and_density_through_the_commands(tmp_path):
  workdir = str(tmp_path / "toy")
  cfg = "--config=configs/flow_matching.py:toy,tiny"
  p = run_module("experiments.train", cfg, f"--workdir={workdir}", "--config.train.num_steps=10")
  assert p.returncode == 0, p.stderr[-3000:]
  p = run_module(
    "experiments.evaluate",
    cfg,
    f"--workdir={workdir}",
    "--sample_stats=300",
    "--config.eval.likelihood_examples=50",
  )
  assert p.returncode == 0, p.stderr[-3000:]
  result = json.loads(p.stdout.strip().splitlines()[-1])
  assert result["num_examples"] == 50 and np.isfinite(result["nll"]) and "bits_per_dim" not in result
  assert result["toy_num_samples"] == 300 and result["energy_distance"] > 0 and len(result["mode_fractions"]) == 8
  out = str(tmp_path / "density.png")
  p = run_module("experiments.sample", cfg, f"--workdir={workdir}", "--kind=density", f"--out={out}")
  assert p.returncode == 0, p.stderr[-3000:]
  assert os.path.getsize(out) > 0


@pytest.mark.slow
def test_image_sample_statistics_through_the_command(tmp_path):
  """`--sample_stats` on images trains the digit classifier on first use (into a fresh cache here)."""
  workdir = str(tmp_path / "run")
  cfg = "--config=configs/flow_matching.py:tiny"
  env = {"GENJAX_CACHE": str(tmp_path / "cache")}
  p = run_module("experiments.train", cfg, f"--workdir={workdir}", "--config.train.num_steps=2", env=env)
  assert p.returncode == 0, p.stderr[-3000:]
  p = run_module("experiments.evaluate", cfg, f"--workdir={workdir}", "--sample_stats=100", env=env, timeout=900)
  assert p.returncode == 0, p.stderr[-3000:]
  result = json.loads(p.stdout.strip().splitlines()[-1])
  assert (
    result["frechet_num_generated"] == 100 and result["frechet_distance"] > result["frechet_test_vs_train"] > 0
  )
