"""Evaluate a checkpoint on the test split; the last line printed is one JSON object.

  python -m experiments.evaluate --config=configs/vae.py --workdir=runs/vae [--checkpoint=best]

The JSON is also written to WORKDIR/eval/step_<N>.json. For the autoencoder family it
holds the ELBO (nats, bits/dim), the IWAE bound with `config.eval.iwae_samples`
samples, the reconstruction MSE, and, with `config.eval.pca`, the PCA baseline's
reconstruction MSE at the same latent size. For a family with `generate()` (GAN, VAE,
PixelCNN) `--sample_stats=N` adds whole-sample statistics of N samples: the Frechet
distance to the test split (and the test-vs-train floor) for images, mode coverage and
the high-quality fraction for toys, and on 1-D toys the GAN discriminator's gap to
D* = p_data / (p_data + p_g) (`genjax.eval.sample_metrics`; DDPM and RealNVP too).
For DDPM it holds the simple loss and the
exact variational bound (all T terms) in bits/dim with its parts (prior, KL, decoder),
on the first `config.eval.bound_examples` examples of the split (0 = all; the number
used is `bound_examples` in the JSON).
"""

from __future__ import annotations

import json
import os
import time

from absl import flags

from genjax.cli import common

CHECKPOINT = flags.DEFINE_string("checkpoint", "latest", "'latest', 'best', or a step number.")
SPLIT = flags.DEFINE_string("split", "test", "Data split to evaluate.")
SAMPLES = flags.DEFINE_integer(
  "sample_stats",
  -1,
  "Samples for the whole-sample statistics of a family with generate() (images: the "
  "Frechet distance to the test split; toys: mode statistics); -1 = the config's eval.frechet_samples / "
  "eval.toy_samples (0 if absent), 0 = off.",
)


def main(argv):
  del argv
  workdir = common.require_workdir()
  import jax
  import numpy as np

  from genjax.eval.pca import pca_reconstruction_mse
  from genjax.train.experiment import Experiment

  config = common.CONFIG.value
  exp = Experiment(config)
  state, step = common.restore_or_exit(exp, workdir, CHECKPOINT.value)
  options = {}
  if getattr(exp.family, "variational", False) and config.eval.get("iwae_samples", 0):
    options["iwae_samples"] = int(config.eval.iwae_samples)
  split, bound_examples = SPLIT.value, None
  if config.model.family == "ddpm":
    from genjax.data import ArraySource

    options["full_bound"] = True
    source = exp.splits[split]
    bound_examples = int(config.eval.get("bound_examples", 0)) or len(source)
    bound_examples = min(bound_examples, len(source))
    split = f"{split}[:{bound_examples}]"
    exp.splits[split] = ArraySource(source[np.arange(bound_examples)])
    if bound_examples < config.eval.batch_size and bound_examples % exp.mesh.devices.size == 0:
      config.eval.batch_size = bound_examples  # padded rows would cost T network calls each
  t0 = time.perf_counter()
  metrics = exp.evaluate(exp.eval_params(state), state.model_state, split=split, **options)
  result = {
    "step": step,
    "checkpoint": CHECKPOINT.value,
    "split": SPLIT.value,
    "dataset": exp.info.name,
    "params": "ema" if config.eval.use_ema else "raw",
    **metrics,
  }
  if "iwae_samples" in options:
    result["iwae_samples"] = options["iwae_samples"]
  if bound_examples is not None:
    result["bound_examples"] = bound_examples
  if config.eval.get("pca", False) and exp.info.kind == "image":

    def flat(source):
      return source[np.arange(len(source))]["image"].reshape(len(source), -1) / 255.0

    result["pca_mse"] = pca_reconstruction_mse(
      flat(exp.splits["train"]), flat(exp.splits[SPLIT.value]), int(config.model.latent_dim)
    )
    result["pca_components"] = int(config.model.latent_dim)
  num = (
    SAMPLES.value
    if SAMPLES.value >= 0
    else int(config.eval.get("frechet_samples" if exp.info.kind == "image" else "toy_samples", 0))
  )
  if num > 0:
    from genjax.eval.sample_metrics import sample_statistics

    result.update(
      sample_statistics(
        exp, exp.eval_params(state), state.model_state, jax.random.fold_in(exp.sample_key(), 1), num
      )
    )
  result["eval_seconds"] = time.perf_counter() - t0
  result["device"] = f"{jax.devices()[0].device_kind} x{exp.mesh.devices.size}"
  if exp.process_index == 0:
    os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
    with open(os.path.join(workdir, "eval", f"step_{step}_{SPLIT.value}.json"), "w") as f:
      json.dump(result, f, indent=2, sort_keys=True)
  print(json.dumps(result, sort_keys=True))


def entry() -> None:
  """The `genjax-evaluate` console script."""
  common.run(main)


if __name__ == "__main__":
  entry()
