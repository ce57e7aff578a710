"""Shared test utilities."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(path: str = "vae", preset: str = "tiny", **overrides):
  """`configs/<path>.py:<preset>` with dotted overrides, e.g. `**{'train.num_steps': 5}`."""
  import importlib

  config = importlib.import_module(f"genjax.configs.{path}").get_config(preset)
  for dotted, value in overrides.items():
    node = config
    *parents, leaf = dotted.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def assert_trees_equal(a, b) -> None:
  """Bit-for-bit equality of two pytrees of arrays."""
  la, ta = jax.tree.flatten(a)
  lb, tb = jax.tree.flatten(b)
  assert ta == tb, f"tree structures differ: {ta} vs {tb}"
  for i, (x, y) in enumerate(zip(la, lb, strict=True)):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape, f"leaf {i}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}"
    assert np.array_equal(x, y), (
      f"leaf {i} differs: max |diff| {np.max(np.abs(x.astype(float) - y.astype(float)))}"
    )


def run_module(*args: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
  """Runs `python -m <args>` from the repo root on one CPU device; returns the completed process."""
  full_env = dict(os.environ)
  full_env.pop("XLA_FLAGS", None)
  full_env.update(
    {
      "JAX_PLATFORMS": "cpu",
      "PYTHONPATH": REPO,
      "JAX_COMPILATION_CACHE_DIR": os.path.join(REPO, ".pytest_cache", "jax-cache"),
    }
  )
  full_env.update(env or {})
  return subprocess.run(
    [sys.executable, "-m", *args], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout
  )


def metrics_before_and_after_training(config) -> tuple[dict, dict]:
  """Trains `config` for `train.num_steps` on one device; test-split metrics at init and at the end."""
  from genjax.train.experiment import Experiment
  from genjax.train.sharding import make_mesh

  exp = Experiment(config, mesh=make_mesh(1))
  state = exp.init_state()
  before = exp.evaluate(state.params, state.model_state)
  step, batches = exp.train_step(), exp.batch_iterator()
  for _ in range(config.train.num_steps):
    state, _ = step(state, exp.shard(next(batches)))
  return before, exp.evaluate(state.params, state.model_state)
