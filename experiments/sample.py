"""Write a PNG grid of samples (EMA parameters where the run keeps them).

  python -m experiments.sample --config=configs/vae.py --workdir=runs/vae --num=64
  python -m experiments.sample ... --kind=interpolation|attribute|reconstructions|latent_map

Kinds: `samples` (from the prior; for plain/denoising autoencoders, reconstructions),
`reconstructions` (test inputs above their reconstructions), `interpolation` (rows
from one test image's code to another's), `attribute` (rows adding growing multiples
of the attribute vector of `--label`: mean code of that label minus mean of the rest),
`latent_map` (scatter of the test codes; needs a 2-D latent).
"""

from __future__ import annotations

import os
import sys

from absl import flags

from experiments import common

NUM = flags.DEFINE_integer("num", 64, "Number of images in the grid.")
KIND = flags.DEFINE_enum("kind", "samples", ["samples", "reconstructions", "interpolation", "attribute",
                                             "latent_map"], "What to draw.")
CHECKPOINT = flags.DEFINE_string("checkpoint", "latest", "'latest', 'best', or a step number.")
OUT = flags.DEFINE_string("out", None, "Output PNG (default: WORKDIR/samples/<kind>_step_<N>.png).")
SEED = flags.DEFINE_integer("seed", 0, "Sampling seed (folded into the run's sample key).")
TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Prior standard deviation for samples.")
LABEL = flags.DEFINE_integer("label", 1, "Attribute label for --kind=attribute.")
SPHERICAL = flags.DEFINE_boolean("spherical", False, "Spherical interpolation of codes.")


def main(argv):
  del argv
  workdir = common.require_workdir()
  import jax
  import numpy as np

  from genjax.eval import latent
  from genjax.eval.grids import save_image_grid
  from genjax.train.experiment import Experiment

  if NUM.value <= 0:
    sys.stderr.write(f"error: --num must be positive, got {NUM.value}\n")
    sys.exit(2)
  exp = Experiment(common.CONFIG.value)
  state, step = common.restore_or_exit(exp, workdir, CHECKPOINT.value)
  params, family = exp.eval_params(state), exp.family
  key = jax.random.fold_in(exp.sample_key(), SEED.value)
  test = exp.splits["test"]
  num, kind = NUM.value, KIND.value
  out = OUT.value or os.path.join(workdir, "samples", f"{kind}_step_{step}.png")
  ncol = None
  rng = np.random.default_rng(SEED.value)

  if kind == "samples" and getattr(family, "variational", True):
    images = family.sample(params, key, num, temperature=TEMPERATURE.value)
  elif kind in ("samples", "reconstructions"):
    images = family.sample_grid(params, state.model_state, key, test[np.arange(num)], 2 * num)
  elif kind == "interpolation":
    steps = 8
    pairs = max(num // steps, 1)
    idx = rng.choice(len(test), size=2 * pairs, replace=False)
    z, labels = latent.encode_split(family, params, _Subset(test, idx), key)
    path = latent.interpolate(z[:pairs], z[pairs:], steps, spherical=SPHERICAL.value)
    lab = None if labels is None else np.repeat(labels[:pairs], steps)
    images = latent.decode_images(family, params, path.reshape(-1, path.shape[-1]), lab)
    ncol = steps
  elif kind == "attribute":
    z, labels = latent.encode_split(family, params, test, key)
    if labels is None:
      sys.stderr.write("error: --kind=attribute needs a labelled dataset\n")
      sys.exit(2)
    has = labels == LABEL.value
    vector = latent.attribute_vector(z, has)
    scales = np.linspace(0.0, 2.0, 8)
    rows = max(num // len(scales), 1)
    pick = rng.choice(np.flatnonzero(~has), size=rows, replace=False)
    path = latent.add_attribute(z[pick], vector, scales)
    lab = None if not family.conditional else np.repeat(labels[pick], len(scales))
    images = latent.decode_images(family, params, path.reshape(-1, path.shape[-1]), lab)
    ncol = len(scales)
  else:  # latent_map
    z, labels = latent.encode_split(family, params, test, key)
    print(latent.save_latent_map(out, z, labels))
    return
  save_image_grid(out, np.asarray(images), ncol)
  print(out)


class _Subset:
  """Rows `idx` of a source, as a source."""

  def __init__(self, source, idx):
    self.source, self.idx = source, np.asarray(idx)

  def __len__(self):
    return len(self.idx)

  def __getitem__(self, indices):
    return self.source[self.idx[np.asarray(indices)]]


if __name__ == "__main__":
  common.run(main)
