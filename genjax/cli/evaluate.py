"""Evaluate a checkpoint; the last line printed is one JSON object.

  python -m experiments.evaluate --workdir=runs/vae [--checkpoint=best] [--sample_stats=N] [--config.KEY=VALUE]

It reads the run's saved config (`WORKDIR/config.json`); `--config=FILE` is optional (the
saved values win over the file's, explicit `--config.KEY=VALUE` overrides win over both).
It only reads the workdir's checkpoints: it can run while the trainer is writing them.

The JSON is also written to WORKDIR/eval/step_<N>_<split>.json. It holds the means over
the split of the family's per-example metrics, computed as the family's
`final_evaluation()` asks (the VAE's IWAE bound with `eval.iwae_samples` samples, the
DDPM's exact T-term bound on `eval.bound_examples` class-balanced examples, ...), the
family's reference metrics (the autoencoder's PCA baseline with `eval.pca`), and with
`--sample_stats=N` (or `eval.frechet_samples` / `eval.toy_samples`) statistics of N
generated samples: the Frechet distance to the test split and its test-vs-train floor
for images, the energy distance and mode statistics for vectors
(`genjax.eval.sample_metrics`).
"""

from __future__ import annotations

import json
import os
import time

from absl import flags

from genjax.cli import common

CHECKPOINT = flags.DEFINE_string("checkpoint", "latest", "'latest', 'best', or a step number.")
SPLIT = flags.DEFINE_string("split", "test", "Data split to evaluate ('train' or 'test').")
SAMPLES = flags.DEFINE_integer(
  "sample_stats",
  None,
  "Samples for whole-sample statistics (images: the Frechet distance to the test split; vectors: energy "
  "distance and mode statistics); 0 = off; default: the config's eval.frechet_samples / eval.toy_samples.",
)


def main(argv):
  del argv
  workdir = common.require_workdir()
  if SAMPLES.value is not None and SAMPLES.value < 0:
    common.fail(f"--sample_stats={SAMPLES.value} is not valid: expected a number of samples >= 0 (0 = off)")
  import jax

  from genjax.eval.sample_metrics import SampleStatistics, feature_network, sample_statistics
  from genjax.train.experiment import Experiment

  config = common.reader_config(workdir)
  exp = Experiment(config)
  if SPLIT.value not in exp.splits:
    common.fail(f"--split={SPLIT.value} is not valid: expected one of {', '.join(sorted(exp.splits))}")
  state, step = common.restore_or_exit(exp, workdir, CHECKPOINT.value)
  family, params = exp.family, exp.eval_params(state)
  plan = family.final_evaluation()
  t0 = time.perf_counter()
  metrics = exp.evaluate(params, state.model_state, split=SPLIT.value, evaluation=plan)
  result = {
    "step": step,
    "checkpoint": CHECKPOINT.value,
    "split": SPLIT.value,
    "dataset": exp.info.name,
    "family": family.name,
    "params": "ema" if exp.run.eval.use_ema else "raw",
    "num_examples": len(exp.evaluation_source(SPLIT.value, plan)),
    **{k: v for k, v in plan.options.items()},
    **metrics,
  }
  result.update(family.reference_metrics(exp.splits["train"], exp.splits[SPLIT.value]))
  default_num = exp.run.eval.frechet_samples if family.images else exp.run.eval.toy_samples
  num = default_num if SAMPLES.value is None else SAMPLES.value
  if num > 0:
    features, info = (None, {})
    if family.images:
      features, info = feature_network(exp.run.eval, exp.info, exp.splits)
    options = SampleStatistics(num, jax.random.fold_in(exp.sample_key(), 1), features, info)
    result.update(sample_statistics(family, params, state.model_state, exp.splits, options))
  seconds = time.perf_counter() - t0
  if exp.process_count > 1:  # the slowest process's time, so that every process prints the same JSON
    from genjax import distributed

    seconds = max(distributed.gather_json(seconds, what="sharing evaluation times"))
  result["eval_seconds"] = seconds
  result["device"] = f"{jax.devices()[0].device_kind} x{exp.mesh.devices.size}"
  result["processes"] = exp.process_count
  if exp.process_index == 0:
    os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
    path = os.path.join(workdir, "eval", f"step_{step}_{SPLIT.value}.json")
    with open(path + ".tmp", "w") as f:
      json.dump(result, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)
  print(json.dumps(result, sort_keys=True))


def entry() -> None:
  """The `genjax-evaluate` console script."""
  common.run(main, __name__, reader=True)


if __name__ == "__main__":
  entry()
