"""The GAN family and its two-player step: shapes, the generic trainer guarantees, toys."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.models.base import PICTURE_POINTS
from genjax.models.gan import split_minibatches
from genjax.nn.dcgan import DCGANDiscriminator, DCGANGenerator
from genjax.train import loop
from genjax.train.experiment import Experiment
from genjax.train.sharding import make_mesh
from tests.helpers import assert_trees_equal, tiny_config


@pytest.mark.parametrize(
  "size,g_features,d_features,channels",
  [
    (28, (64, 32), (32, 64), 1),
    (32, (128, 64, 32), (32, 64, 128), 3),
    (64, (512, 256, 128, 64), (64, 128, 256, 512), 3),
  ],
)
def test_dcgan_shapes(size, g_features, d_features, channels):
  g = DCGANGenerator((size, size, channels), g_features, num_classes=10)
  d = DCGANDiscriminator(d_features, num_classes=10)
  z, y = jnp.zeros((2, 100)), jnp.zeros((2,), jnp.int32)
  g_vars = jax.eval_shape(lambda: g.init(jax.random.key(0), z, y, train=False))
  out = jax.eval_shape(lambda v: g.apply(v, z, y, train=False), g_vars)
  assert out.shape == (2, size, size, channels)
  d_vars = jax.eval_shape(lambda: d.init(jax.random.key(0), jnp.zeros(out.shape), y, train=False))
  assert jax.eval_shape(lambda v: d.apply(v, jnp.zeros(out.shape), y, train=False), d_vars).shape == (2,)
  assert "batch_stats" in g_vars and "batch_stats" in d_vars
  assert "bn_0" not in d_vars["batch_stats"]  # no batch norm on D's input layer


def test_generator_output_range_and_bad_sizes():
  g = DCGANGenerator((28, 28, 1), (16, 8))
  z = jax.random.normal(jax.random.key(0), (4, 8))
  v = g.init(jax.random.key(1), z, train=False)
  x = g.apply(v, 10 * z, train=False)
  assert float(jnp.max(jnp.abs(x))) <= 1.0
  with pytest.raises(ValueError, match=r"28x28 .*|divisible by 2\*\*3"):
    DCGANGenerator((28, 28, 1), (32, 16, 8)).init(jax.random.key(0), z, train=False)
  with pytest.raises(ValueError, match="model.arch='mlp' is not valid: expected 'dcgan'"):
    Experiment(tiny_config("gan", **{"model.arch": "mlp"}), mesh=make_mesh(1))
  with pytest.raises(ValueError, match="model.loss='wasserstein' is not valid"):
    Experiment(tiny_config("gan", **{"model.loss": "wasserstein"}), mesh=make_mesh(1))
  with pytest.raises(
    ValueError, match=r"train.batch_size=32 is not valid: expected a multiple of 12 \(4 device\(s\) x 3"
  ):
    Experiment(tiny_config("gan", **{"model.d_steps": 3}), mesh=make_mesh(4))


def test_minibatches_are_strided_rows():
  batch = {"x": jnp.arange(12)}
  parts = [np.asarray(m["x"]).tolist() for m in split_minibatches(batch, 3)]
  assert parts == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]]


def _run(exp, n):
  state, step, batches = exp.init_state(), exp.train_step(), exp.batch_iterator()
  metrics = []
  for _ in range(n):
    state, m = step(state, exp.shard(next(batches)))
    metrics.append(jax.device_get(m))
  batches.close()
  return state, metrics


def test_four_devices_match_one_device_with_two_discriminator_steps():
  """Batch-norm moments and gradients are over the global batch, so the mesh size does not matter."""
  config = tiny_config("gan", **{"model.d_steps": 2})
  s1, m1 = _run(Experiment(config, mesh=make_mesh(1)), 4)
  s4, m4 = _run(Experiment(config, mesh=make_mesh(4)), 4)
  for a, b in zip(m1, m4, strict=True):
    for k in ("loss_d", "loss_g", "d_real", "d_fake", "grad_norm_g"):
      np.testing.assert_allclose(a[k], b[k], rtol=2e-4, err_msg=k)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-5),
    (s1.params, s1.model_state),
    (s4.params, s4.model_state),
  )
  # The state carries both players and their optimizers; the step logged what it promised.
  assert set(s1.params) == set(s1.opt_state) == set(s1.model_state) == {"generator", "discriminator"}
  assert {"loss", "loss_d", "loss_g", "d_real", "d_fake", "d_fake_g", "grad_norm_g", "grad_norm_d"} <= set(m1[0])
  # k = 2 discriminator updates per step: Adam's count says so.
  counts = [int(x) for x in jax.tree.leaves(s1.opt_state["discriminator"]) if np.ndim(x) == 0]
  assert counts and set(counts) == {8}


def test_resumed_run_is_bit_identical_to_straight_run(tmp_path):
  overrides = {"train.num_steps": 20, "optim.disc_learning_rate": 5e-4}
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  loop.train_and_evaluate(tiny_config("gan", **overrides), straight, mesh=make_mesh(1))
  loop.train_and_evaluate(tiny_config("gan", **{**overrides, "train.num_steps": 10}), resumed, mesh=make_mesh(1))
  loop.train_and_evaluate(tiny_config("gan", **overrides), resumed, mesh=make_mesh(1))
  config = tiny_config("gan", **overrides)
  states = []
  for workdir in (straight, resumed):
    exp = Experiment(config, mesh=make_mesh(1))
    states.append(exp.restore(workdir)[0])
  assert int(states[0].step) == 20
  assert_trees_equal(states[0], states[1])


def test_conditional_generate_and_evaluate():
  config = tiny_config("gan", "tiny,conditional")
  exp = Experiment(config, mesh=make_mesh(1))
  state = exp.init_state()
  images = exp.family.generate(state.params, state.model_state, jax.random.key(0), 12)
  assert images.shape == (12, 8, 8, 1) and images.dtype == jnp.uint8
  same = exp.family.generate(state.params, state.model_state, jax.random.key(0), 12, labels=jnp.arange(12) % 10)
  np.testing.assert_array_equal(images, same)  # the default labels cycle through the classes
  other = exp.family.generate(state.params, state.model_state, jax.random.key(0), 12, labels=jnp.zeros(12, int))
  assert not np.array_equal(images, other)
  metrics = exp.evaluate(state.params, state.model_state)
  assert set(metrics) == {"d_real", "d_fake", "disc_accuracy"}
  assert all(0.0 <= v <= 1.0 for v in metrics.values())


def test_toy_family_picture_metrics_and_sample_statistics():
  from genjax.eval.sample_metrics import SampleStatistics, sample_statistics

  for preset in ("tiny,ring8", "tiny,bimodal_far,wgan_gp"):
    config = tiny_config("gan_toy", preset)
    exp = Experiment(config, mesh=make_mesh(1))
    state, metrics = _run(exp, 3)
    grid = jax.jit(exp.family.sample_grid, static_argnames="num")(
      state.params, state.model_state, exp.sample_key(), exp.example_batch(2), num=1
    )
    assert grid.kind == "points" and grid.data.shape == (PICTURE_POINTS,) + exp.info.shape
    assert np.isfinite(metrics[-1]["loss"])
    ev = exp.evaluate(state.params, state.model_state)
    assert 0.0 <= ev["high_quality"] <= 1.0 and np.isfinite(ev["log_p_data"])
    options = SampleStatistics(600, jax.random.key(3))
    stats = sample_statistics(exp.family, state.params, state.model_state, exp.splits, options)
    assert len(stats["mode_fractions"]) == len(exp.family.toy.modes)
    assert stats["num_modes"] == len(exp.family.toy.modes) and 0 <= stats["modes_covered"] <= stats["num_modes"]
    if exp.info.shape == (1,):
      assert 0.0 <= stats["d_gap_mean"] <= 1.0 and 0.0 <= stats["d_star_mean"] <= 1.0


def test_other_families_generate():
  for path, preset in (("vae", "tiny"), ("pixelcnn", "tiny")):
    exp = Experiment(tiny_config(path, preset), mesh=make_mesh(1))
    state = exp.init_state()
    images = exp.family.generate(state.params, state.model_state, jax.random.key(0), 2)
    assert images.shape == (2, 8, 8, 1) and images.dtype == jnp.uint8


@pytest.mark.slow
def test_optimal_discriminator_gap_shrinks_with_training():
  """On the 1-D Gaussian, a trained D is close to D* (about 1/2 everywhere once p_g ~ p_data)."""
  from genjax.eval.sample_metrics import SampleStatistics, vector_statistics

  config = tiny_config("gan_toy", "gaussian_1d", **{"train.num_steps": 1500})
  exp = Experiment(config, mesh=make_mesh(1))
  state, _ = _run(exp, 1500)
  options = SampleStatistics(5000, jax.random.key(0))
  stats = vector_statistics(exp.family, state.params, state.model_state, exp.splits, options)
  assert stats["d_gap_mean"] < 0.1 and abs(stats["d_star_mean"] - 0.5) < 0.1, stats
  assert stats["energy_distance"] < 0.05, stats


@pytest.mark.parametrize("preset", ["tiny", "tiny,conditional"])
def test_reused_fakes_are_the_generator_step_on_the_discriminator_steps_latents(preset):
  """`model.reuse_fakes`: one G forward per step. D's update is the usual one; G's gradient is its
  loss's on the same latents against the updated D, computed here the long way (G run again)."""
  exp = Experiment(tiny_config("gan", preset, **{"model.reuse_fakes": True}), mesh=make_mesh(1))
  fam, state = exp.family, exp.init_state()
  batches = exp.batch_iterator()
  batch = jax.tree.map(jnp.asarray, next(batches))
  batches.close()
  key = jax.random.key(7)
  params, opt_state, model_state, metrics = jax.jit(fam.update, static_argnums=0)(
    exp.tx, state.params, state.opt_state, state.model_state, batch, key
  )

  k_d, _ = jax.random.split(key)
  (k,) = jax.random.split(k_d, 1)
  g, d, ms = state.params["generator"], state.params["discriminator"], state.model_state
  (_, (_, d_state)), d_grads = jax.value_and_grad(fam.discriminator_loss, has_aux=True)(d, g, ms, batch, k)
  updates, _ = exp.tx.discriminator.update(d_grads, state.opt_state["discriminator"], d)
  d_new = jax.tree.map(lambda a, u: a + u, d, updates)
  z = fam.noise(jax.random.split(k)[0], batch["image"].shape[0])
  labels = batch["label"] if fam.conditional else None
  ms_new = {"generator": ms["generator"], "discriminator": d_state}

  def g_loss(g):
    fake, g_stats = fam.fake(g, ms, z, labels, train=True)
    return fam.generator_objective(fake, d_new, ms_new, labels)[0], g_stats

  (loss_g, g_stats), g_grads = jax.value_and_grad(g_loss, has_aux=True)(g)
  updates, _ = exp.tx.generator.update(g_grads, state.opt_state["generator"], g)
  g_new = jax.tree.map(lambda a, u: a + u, g, updates)
  close = lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)  # noqa: E731
  jax.tree.map(close, params, {"generator": g_new, "discriminator": d_new})
  jax.tree.map(close, model_state, {"generator": g_stats, "discriminator": d_state})
  np.testing.assert_allclose(metrics["loss_g"], loss_g, rtol=1e-5)
  # Without it, G's update draws other latents: a different step.
  other = jax.jit(Experiment(tiny_config("gan", preset), mesh=make_mesh(1)).family.update, static_argnums=0)(
    exp.tx, state.params, state.opt_state, state.model_state, batch, key
  )
  jax.tree.map(close, other[0]["discriminator"], d_new)
  assert not np.allclose(np.asarray(other[3]["loss_g"]), np.asarray(loss_g))


def test_reused_fakes_need_one_discriminator_step():
  with pytest.raises(ValueError, match="reuse_fakes"):
    Experiment(tiny_config("gan", **{"model.reuse_fakes": True, "model.d_steps": 2}), mesh=make_mesh(1))
