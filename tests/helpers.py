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


DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def child_env(host_devices: int = 1, **extra: str) -> dict[str, str]:
  """The environment of a process a test starts: this one's, on the CPU with the repo importable,
  with the suite's compile settings (`tests/conftest.py`'s `XLA_FLAGS` and
  `JAX_DISABLE_MOST_OPTIMIZATIONS`) but `host_devices` CPU devices instead of the 4 that conftest
  forces for its own process; `extra` variables last."""
  env = dict(os.environ)
  flags = [f for f in env.pop("XLA_FLAGS", "").split() if not f.startswith(DEVICE_COUNT_FLAG)]
  if host_devices != 1:
    flags.append(f"{DEVICE_COUNT_FLAG}={host_devices}")
  if flags:
    env["XLA_FLAGS"] = " ".join(flags)
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  env.update(extra)
  return env


def run_module(
  *args: str, timeout: int = 300, env: dict | None = None, host_devices: int = 1
) -> subprocess.CompletedProcess:
  """Runs `python -m <args>` from the repo root on `host_devices` CPU devices (`child_env`, then `env`)."""
  full_env = child_env(host_devices, JAX_COMPILATION_CACHE_DIR=os.path.join(REPO, ".pytest_cache", "jax-cache"))
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


_CLI_DRIVER = """
import contextlib, io, json, logging, sys
sys.path.insert(0, {repo!r})
import importlib
from absl import flags
module = importlib.import_module({module!r})
results = []
for argv in json.loads({cases!r}):
  for name in [n for n in flags.FLAGS if n.startswith("config.")]:  # overrides defined by the last parse
    delattr(flags.FLAGS, name)
  flags.FLAGS.unparse_flags()
  logging.root.handlers = []  # each case logs to its own stderr, as a fresh process would
  out, err = io.StringIO(), io.StringIO()
  sys.argv = [{module!r}] + argv
  code = 0
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
      module.entry()
    except SystemExit as e:
      code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  results.append([code, out.getvalue(), err.getvalue()])
print("CASES " + json.dumps(results))
"""


def run_cli_cases(module: str, cases: list[list[str]], timeout: int = 300) -> list[subprocess.CompletedProcess]:
  """Runs the command-line entry point of `module` (e.g. 'genjax.cli.train') once per argv in `cases`,
  all in ONE fresh process (the flags are re-parsed for each case), so many cheap error cases cost one
  start-up. Returns a CompletedProcess (returncode, stdout, stderr) per case."""
  import json

  code = _CLI_DRIVER.format(repo=REPO, module=module, cases=json.dumps(cases))
  p = run_python(code, timeout=timeout)
  lines = [line for line in p.stdout.splitlines() if line.startswith("CASES ")]
  assert p.returncode == 0 and lines, p.stderr[-3000:]
  return [
    subprocess.CompletedProcess(argv, c, out, err)
    for argv, (c, out, err) in zip(cases, json.loads(lines[-1][6:]), strict=True)
  ]


def run_python(code: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
  """Runs `python -c code` from the repo root on one CPU device (`child_env`, then `env`)."""
  full_env = child_env(**(env or {}))
  return subprocess.run(
    [sys.executable, "-c", code], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout
  )
