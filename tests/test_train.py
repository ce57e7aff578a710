"""The training core: data parallelism, exact resume, checkpoints, non-finite losses."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from genjax.models.autoencoder import AutoencoderFamily
from genjax.train import loop
from genjax.train.experiment import Experiment
from genjax.train.metric_writer import read_metrics
from genjax.train.sharding import make_mesh
from tests.helpers import REPO, assert_trees_equal, metrics_before_and_after_training, tiny_config


def _restore(config, workdir, which="latest"):
  exp = Experiment(config, mesh=make_mesh(1))
  ckpt = exp.checkpointer(workdir, async_save=False)
  state, meta = ckpt.restore(exp.abstract_state(), ckpt.resolve(which))
  ckpt.close()
  return state, meta


def _run_steps(exp, num_steps):
  state = exp.init_state()
  step = exp.train_step()
  batches = exp.batch_iterator()
  losses = []
  for _ in range(num_steps):
    state, metrics = step(state, exp.shard(next(batches)))
    losses.append(float(metrics["loss"]))
  return state, losses


@pytest.mark.parametrize("devices", [1, 4])
def test_abstract_state_is_the_init_states_structure(devices):
  """Checkpoints are restored onto `abstract_state()` (no initializer compiled): it must be
  the fresh state's tree, shapes, dtypes and shardings exactly."""
  exp = Experiment(tiny_config(), mesh=make_mesh(devices))
  abstract, state = exp.abstract_state(), exp.init_state()
  assert jax.tree.structure(abstract) == jax.tree.structure(state)
  for a, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(state), strict=True):
    assert isinstance(a, jax.ShapeDtypeStruct)
    assert (a.shape, a.dtype, a.sharding) == (s.shape, s.dtype, s.sharding)


def test_four_devices_match_one_device():
  assert jax.device_count() >= 4, "conftest forces 4 host devices"
  config = tiny_config()
  exp1 = Experiment(config, mesh=make_mesh(1))
  exp4 = Experiment(config, mesh=make_mesh(4))
  s1, l1 = _run_steps(exp1, 6)
  s4, l4 = _run_steps(exp4, 6)
  assert len(s4.params["encoder"]["dense_0"]["kernel"].sharding.device_set) == 4
  np.testing.assert_allclose(l1, l4, rtol=1e-5)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-6),
    s1.params,
    s4.params,
  )
  # Evaluation over a split that does not divide into the batch (padding is masked).
  m1 = exp1.evaluate(s1.params, s1.model_state)
  m4 = exp4.evaluate(s4.params, s4.model_state)
  assert len(exp1.splits["test"]) % config.eval.batch_size != 0
  for k in m1:
    np.testing.assert_allclose(m1[k], m4[k], rtol=1e-4, err_msg=k)


def test_resumed_run_is_bit_identical_to_straight_run(tmp_path):
  overrides = {
    "train.num_steps": 20,
    "optim.schedule": "cosine",
    "optim.schedule_steps": 20,
    "optim.grad_clip": 1.0,
  }
  straight = str(tmp_path / "straight")
  loop.train_and_evaluate(tiny_config(**overrides), straight, mesh=make_mesh(1))
  resumed = str(tmp_path / "resumed")
  loop.train_and_evaluate(tiny_config(**{**overrides, "train.num_steps": 10}), resumed, mesh=make_mesh(1))
  assert _restore(tiny_config(**overrides), resumed)[1]["step"] == 10
  loop.train_and_evaluate(tiny_config(**overrides), resumed, mesh=make_mesh(1))

  a, meta_a = _restore(tiny_config(**overrides), straight)
  b, meta_b = _restore(tiny_config(**overrides), resumed)
  assert int(a.step) == int(b.step) == 20
  assert meta_a["data_position"] == meta_b["data_position"] == 20 * 32
  assert_trees_equal(a, b)  # params, optimizer state, EMA, key, step
  # The resumed run logged its steps after the resume point, not again from 0.
  train_steps = [r["step"] for r in read_metrics(resumed) if r["split"] == "train"]
  assert train_steps == [5, 10, 15, 20]


def test_killed_during_save_resumes_from_last_complete_checkpoint(tmp_path):
  """A process killed right after starting an async save leaves no usable partial checkpoint."""
  workdir = str(tmp_path / "killed")
  driver = f"""
import os, sys
sys.path.insert(0, {REPO!r})
from genjax.train import checkpoint, loop
from genjax.train.sharding import make_mesh
from tests.helpers import tiny_config
real_save = checkpoint.Checkpointer.save
def save_then_die(self, state, position, metrics=None):
  step = real_save(self, state, position, metrics)
  if step == 20:
    os._exit(137)   # like SIGKILL: no cleanup, no waiting for the background write
  return step
checkpoint.Checkpointer.save = save_then_die
loop.train_and_evaluate(tiny_config(**{{'train.num_steps': 30}}), {workdir!r}, mesh=make_mesh(1))
"""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", driver], env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 137, proc.stderr[-3000:]
  # Simulate the other outcome of a kill too: a half-written step-30 directory.
  partial = os.path.join(workdir, "checkpoints", "30.orbax-checkpoint-tmp-1700000000")
  os.makedirs(os.path.join(partial, "state"))
  with open(os.path.join(partial, "state", "junk"), "wb") as f:
    f.write(b"\0" * 10)

  config = tiny_config(**{"train.num_steps": 30})
  exp = Experiment(config, mesh=make_mesh(1))
  ckpt = exp.checkpointer(workdir, async_save=False)
  complete = ckpt.all_steps()
  ckpt.close()
  assert 30 not in complete and 10 in complete
  loop.train_and_evaluate(config, workdir, mesh=make_mesh(1))
  assert not glob.glob(os.path.join(workdir, "checkpoints", "*tmp*"))

  straight = str(tmp_path / "straight")
  loop.train_and_evaluate(config, straight, mesh=make_mesh(1))
  assert_trees_equal(_restore(config, workdir)[0], _restore(config, straight)[0])


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
  workdir = str(tmp_path / "nan")
  loop.train_and_evaluate(tiny_config(**{"train.num_steps": 10}), workdir, mesh=make_mesh(1))
  real_loss = AutoencoderFamily.loss

  def nan_loss(self, params, model_state, batch, key):
    loss, aux = real_loss(self, params, model_state, batch, key)
    return loss * np.nan, aux

  monkeypatch.setattr(AutoencoderFamily, "loss", nan_loss)
  with pytest.raises(
    loop.NonFiniteLossError,
    match=r"non-finite .*loss.* in steps 11 to 15; stopping\. the last saved checkpoint, step 10, is kept",
  ):
    loop.train_and_evaluate(tiny_config(**{"train.num_steps": 20}), workdir, mesh=make_mesh(1))
  state, meta = _restore(tiny_config(), workdir)
  assert meta["step"] == 10
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


def test_best_checkpoint_is_kept_and_restorable(tmp_path):
  workdir = str(tmp_path / "best")
  config = tiny_config(**{"train.num_steps": 40, "checkpoint.keep": 1})
  loop.train_and_evaluate(config, workdir, mesh=make_mesh(1))
  exp = Experiment(config, mesh=make_mesh(1))
  ckpt = exp.checkpointer(workdir, async_save=False)
  steps = ckpt.all_steps()
  best = ckpt.resolve("best")
  values = {r["step"]: r["bits_per_dim"] for r in read_metrics(workdir) if r["split"] == "test"}
  ckpt.close()
  assert best == min(values, key=values.get)
  assert set(steps) == {40, best}


def test_bad_batch_and_bad_batch_size_give_clear_errors():
  config = tiny_config()
  exp = Experiment(config, mesh=make_mesh(1))
  wrong = {"image": np.zeros((32, 28, 28, 1), np.uint8), "label": np.zeros((32,), np.int32)}
  with pytest.raises(ValueError, match=r"\(28, 28, 1\).*\(8, 8, 1\)"):
    exp.shard(wrong)
  with pytest.raises(ValueError, match=r"train.batch_size=30 is not valid: expected a multiple of 4 \(4 device"):
    Experiment(tiny_config(**{"train.batch_size": 30}), mesh=make_mesh(4))
  with pytest.raises(ValueError, match="eval.batch_size=250 is not valid: expected a multiple of the 4 device"):
    Experiment(tiny_config(**{"eval.batch_size": 250}), mesh=make_mesh(4))
  with pytest.raises(ValueError, match="model.variant='vea' is not valid"):
    Experiment(tiny_config(**{"model.variant": "vea"}), mesh=make_mesh(1))


def test_learns_on_digits():
  """A few hundred steps on the 8x8 digits improve the test ELBO by a wide margin."""
  config = tiny_config(**{"train.num_steps": 300, "model.hidden": (128, 64), "model.latent_dim": 8})
  before, after = metrics_before_and_after_training(config)
  # 64 binarized pixels: an untrained model scores about 64 ln 2 = 44 nats.
  assert before["elbo"] < -40.0
  assert after["elbo"] > before["elbo"] + 10.0, (before, after)


def test_ema_warmup_schedule_and_update():
  import jax.numpy as jnp

  from genjax.train.state import ema_decay_at, ema_update

  np.testing.assert_allclose(float(ema_decay_at(jnp.asarray(0), 0.999, True)), 0.1, rtol=1e-6)
  np.testing.assert_allclose(float(ema_decay_at(jnp.asarray(90), 0.999, True)), 91 / 100, rtol=1e-6)
  np.testing.assert_allclose(float(ema_decay_at(jnp.asarray(10**6), 0.999, True)), 0.999, rtol=1e-6)
  np.testing.assert_allclose(float(ema_decay_at(jnp.asarray(0), 0.999, False)), 0.999, rtol=1e-6)
  ema = ema_update({"w": jnp.zeros(3)}, {"w": jnp.ones(3)}, 0.25)
  np.testing.assert_allclose(np.asarray(ema["w"]), 0.75)
