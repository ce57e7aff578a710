"""RealNVP through the trainer: exact resume with batch-norm model_state, and the CLI on the tiny preset."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from genjax.train import loop
from genjax.train.sharding import make_mesh
from tests.helpers import assert_trees_equal, run_module, tiny_config
from tests.test_train import _restore


def test_resume_is_bit_identical_including_batch_norm_statistics(tmp_path):
  config = lambda steps: tiny_config("realnvp", "ring8,toy_tiny", **{"train.num_steps": steps})
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  loop.train_and_evaluate(config(20), straight, mesh=make_mesh(1))
  loop.train_and_evaluate(config(10), resumed, mesh=make_mesh(1))
  loop.train_and_evaluate(config(20), resumed, mesh=make_mesh(1))
  a, _ = _restore(config(20), straight)
  b, _ = _restore(config(20), resumed)
  assert int(a.step) == int(b.step) == 20
  assert a.model_state["batch_stats"]  # running statistics exist and moved
  var = np.asarray(a.model_state["batch_stats"]["layers_1"]["var"])
  assert not np.allclose(var, 1.0)
  assert_trees_equal(a, b)


def test_cli_train_evaluate_sample_on_tiny_digits(tmp_path):
  workdir = str(tmp_path / "run")
  cfg = "--config=configs/realnvp.py:tiny"
  p = run_module("experiments.train", cfg, f"--workdir={workdir}", "--config.train.num_steps=10")
  assert p.returncode == 0, p.stderr[-3000:]
  p = run_module("experiments.evaluate", cfg, f"--workdir={workdir}")
  assert p.returncode == 0, p.stderr[-3000:]
  result = json.loads(p.stdout.strip().splitlines()[-1])
  assert 0.0 < result["bits_per_dim"] < 9.0
  np.testing.assert_allclose(result["nll"], result["bits_per_dim"] * 64 * np.log(2.0), rtol=1e-4)
  for kind in ("samples", "interpolation"):
    out = os.path.join(workdir, f"{kind}.png")
    p = run_module(
      "experiments.sample",
      cfg,
      f"--workdir={workdir}",
      f"--kind={kind}",
      "--num=16",
      "--temperature=0.7",
      f"--out={out}",
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert os.path.getsize(out) > 0


@pytest.mark.slow
def test_two_moons_test_nll_approaches_the_entropy():
  """A short toy run: the test NLL falls to within 0.6 nats of the entropy (0.963 nats)."""
  from genjax.eval import toy_density
  from tests.helpers import metrics_before_and_after_training

  entropy, stderr = toy_density.entropy("two_moons", 20000)
  assert abs(entropy - 0.963) < 4 * stderr + 0.01
  before, after = metrics_before_and_after_training(
    tiny_config(
      "realnvp",
      "two_moons,toy_tiny",
      **{"train.num_steps": 800, "optim.learning_rate": 3e-3, "model.num_couplings": 8, "model.hidden": (64, 64)},
    )
  )
  assert before["nll"] > entropy + 1.0
  assert after["nll"] < entropy + 0.6, (before, after)
