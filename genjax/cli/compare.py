"""Compare the trained states of two runs, leaf by leaf; the last line printed is one JSON object.

  python -m genjax.cli.compare runs/vae2 runs/vae1 [--checkpoint=latest] [--atol=0]

Each workdir's checkpoint (`latest`, `best` or a step) is restored read-only with the run's own
saved config, in this one process, and every leaf of the two TrainStates (parameters, optimizer
state, EMA, model state, step and key) is compared. Exit status 0 when they are equal (bit for bit
with the default `--atol=0`, else within `--atol`), 1 when they differ, 2 for a bad argument or a
workdir without a saved config or usable checkpoint.

Use it to check that a multi-process run (`python -m genjax.launch --processes=2 -- python -m
experiments.train ...`) ends where a one-process run with as many devices ends
(`JAX_NUM_CPU_DEVICES=2 python -m experiments.train ...`): the README's recipe.
"""

from __future__ import annotations

import argparse
import json
import sys


def _fail(message: str, status: int = 2) -> None:
  sys.stderr.write(f"error: {message}\n")
  sys.exit(status)


def restore_run(workdir: str, which: str = "latest"):
  """`(state, step)` of checkpoint `which` of `workdir`, built from its saved config on one device."""
  from genjax.train import workdir as workdir_lib
  from genjax.train.experiment import Experiment
  from genjax.train.sharding import make_mesh

  saved = workdir_lib.load_saved_config(workdir)
  if saved is None:
    raise FileNotFoundError(f"{workdir} has no saved config (config.json); is it a training workdir?")
  exp = Experiment(workdir_lib.config_from_saved(saved), mesh=make_mesh(1))
  return exp.restore(workdir, which)


def compare_states(a, b, atol: float = 0.0) -> dict:
  """Leaf-by-leaf comparison of two pytrees of arrays.

  Returns a JSON-able dict: `leaves` (how many), `same_structure`, `max_abs_diff` (over leaves of
  equal shape and dtype), `differing` (key paths of leaves that differ by more than `atol`, or in
  shape or dtype; at most 20) and `equal` (same structure and nothing differing).
  """
  import jax
  import numpy as np

  la, ta = jax.tree_util.tree_flatten_with_path(a)
  lb, tb = jax.tree_util.tree_flatten_with_path(b)
  out = {"leaves": len(la), "same_structure": ta == tb, "max_abs_diff": 0.0, "differing": []}
  if ta != tb:
    out["equal"] = False
    return out
  differing = []
  for (path, x), (_, y) in zip(la, lb, strict=True):
    if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    x, y = np.asarray(x), np.asarray(y)
    name = jax.tree_util.keystr(path)
    if x.shape != y.shape or x.dtype != y.dtype:
      differing.append(name)
      continue
    if x.size:
      diff = float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64))))
      out["max_abs_diff"] = max(out["max_abs_diff"], diff)
      if (diff > atol) if atol > 0 else not np.array_equal(x, y):
        differing.append(name)
  out["differing"] = differing[:20]
  out["num_differing"] = len(differing)
  out["equal"] = not differing
  return out


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m genjax.cli.compare", description=__doc__.splitlines()[0])
  parser.add_argument("workdir_a")
  parser.add_argument("workdir_b")
  parser.add_argument("--checkpoint", default="latest", help="'latest' (default), 'best' or a step number")
  parser.add_argument(
    "--atol", type=float, default=0.0, help="tolerated |a - b| per element (default 0: bit for bit)"
  )
  args = parser.parse_args(argv)
  if args.atol < 0:
    _fail(f"--atol={args.atol}: expected a tolerance >= 0")
  from genjax.schema import UsageError
  from genjax.train.checkpoint import CheckpointError
  from genjax.train.workdir import ConfigFileError

  states = {}
  for key, workdir in (("a", args.workdir_a), ("b", args.workdir_b)):
    try:
      states[key] = restore_run(workdir, args.checkpoint)
    except (FileNotFoundError, CheckpointError, ConfigFileError, UsageError, ValueError) as e:
      _fail(f"{workdir}: {' '.join(str(e).split())}")
  (a, step_a), (b, step_b) = states["a"], states["b"]
  result = {"a": {"workdir": args.workdir_a, "step": step_a}, "b": {"workdir": args.workdir_b, "step": step_b}}
  result.update(compare_states(a, b, args.atol))
  print(json.dumps(result))
  sys.exit(0 if result["equal"] else 1)


if __name__ == "__main__":
  main()
