"""Write a PNG grid of samples (EMA parameters where the run keeps them).

  python -m experiments.sample --config=configs/vae.py --workdir=runs/vae --num=64
  python -m experiments.sample ... --kind=interpolation|attribute|reconstructions|latent_map

PixelCNN: `samples` (temperature `--temperature`, class `--label` for a conditional
model) and `completion` (the lower half of test images sampled given the upper half).

Autoencoders: `samples` (from the prior; for plain/denoising autoencoders, reconstructions),
`reconstructions` (test inputs above their reconstructions), `interpolation` (rows
from one test image's code to another's), `attribute` (rows adding growing multiples
of the attribute vector of `--label`: mean code of that label minus mean of the rest),
`latent_map` (scatter of the test codes; needs a 2-D latent).

GAN: `samples` from the generator (`--label` for a conditional one); toy GANs write one
scatter (2-D) or histogram (1-D) picture of 2,000 samples.

DDPM: `samples` (`--sampler=ancestral|ddim`, `--ddim_steps`, `--eta`; default the
config's `model.sampler`), `trajectory` (ancestral chains, the state every
`--trajectory_every` steps), `interpolation` (through `x_t` at `--interp_t` of two
test images, spherical in the noise).
"""

from __future__ import annotations

import os
import sys

from absl import flags

from genjax.cli import common

NUM = flags.DEFINE_integer("num", 64, "Number of images in the grid.")
KIND = flags.DEFINE_enum(
  "kind",
  "samples",
  [
    "samples",
    "reconstructions",
    "interpolation",
    "attribute",
    "latent_map",
    "completion",
    "density",
    "trajectory",
  ],
  "What to draw (completion: PixelCNN; trajectory: DDPM; the others but samples: "
  "autoencoders, interpolation also DDPM and RealNVP; density: RealNVP toys).",
)
CHECKPOINT = flags.DEFINE_string("checkpoint", "latest", "'latest', 'best', or a step number.")
OUT = flags.DEFINE_string("out", None, "Output PNG (default: WORKDIR/samples/<kind>_step_<N>.png).")
SEED = flags.DEFINE_integer("seed", 0, "Sampling seed (folded into the run's sample key).")
TEMPERATURE = flags.DEFINE_float(
  "temperature", 1.0, "VAE: prior standard deviation; PixelCNN: softmax temperature (0 = arg-max)."
)
LABEL = flags.DEFINE_integer(
  "label",
  -1,
  "--kind=attribute: the attribute's label (-1: 1); a conditional "
  "PixelCNN: the class to sample (-1 cycles through the classes).",
)
SPHERICAL = flags.DEFINE_boolean("spherical", False, "Spherical interpolation of codes.")
SAMPLER = flags.DEFINE_enum("sampler", None, ["ancestral", "ddim"], "DDPM sampler (default: model.sampler).")
DDIM_STEPS = flags.DEFINE_integer("ddim_steps", None, "DDPM: DDIM steps (default: model.ddim_steps).")
ETA = flags.DEFINE_float(
  "eta", None, "DDPM: DDIM eta, 0 = deterministic, 1 = ancestral-like (default: model.ddim_eta)."
)
TRAJECTORY_EVERY = flags.DEFINE_integer(
  "trajectory_every", 0, "DDPM trajectory: steps between shown states (0: T/10)."
)
INTERP_T = flags.DEFINE_integer("interp_t", 500, "DDPM interpolation: the step t of x_t (0-based).")


def main(argv):
  del argv
  workdir = common.require_workdir()
  import jax
  import numpy as np

  from genjax.eval import figures, latent
  from genjax.eval.grids import save_image_grid
  from genjax.train.experiment import Experiment

  if NUM.value <= 0:
    sys.stderr.write(f"error: --num must be positive, got {NUM.value}\n")
    sys.exit(2)
  exp = Experiment(common.CONFIG.value)
  state, step = common.restore_or_exit(exp, workdir, CHECKPOINT.value)
  params, family, test = exp.eval_params(state), exp.family, exp.splits["test"]
  key = jax.random.fold_in(exp.sample_key(), SEED.value)
  out = OUT.value or os.path.join(workdir, "samples", f"{KIND.value}_step_{step}.png")
  try:
    if hasattr(family, "flow_inverse"):  # RealNVP: samples, interpolation, density (toys)
      images, ncol = _flow_figure(family, params, state.model_state, test, key)
      save_image_grid(out, np.asarray(images), ncol)
      print(out)
      return
    if common.CONFIG.value.model.family == "ddpm":
      from genjax.eval.diffusion_figures import ddpm_figure

      mc = common.CONFIG.value.model
      images, ncol = ddpm_figure(
        family,
        params,
        test,
        KIND.value,
        NUM.value,
        key,
        sampler=SAMPLER.value or mc.sampler,
        ddim_steps=DDIM_STEPS.value or mc.ddim_steps,
        eta=mc.ddim_eta if ETA.value is None else ETA.value,
        trajectory_every=TRAJECTORY_EVERY.value,
        interp_t=INTERP_T.value,
      )
      save_image_grid(out, images, ncol)
      print(out)
      return
    if hasattr(family, "complete"):  # autoregressive (PixelCNN)
      label = None if LABEL.value < 0 else LABEL.value
      images, ncol = figures.autoregressive_figure(
        family, params, test, KIND.value, NUM.value, key, temperature=TEMPERATURE.value, label=label
      )
      save_image_grid(out, images, ncol)
      print(out)
      return
    if getattr(family, "two_player", False):  # GAN: samples only (toys: one scatter/histogram picture)
      if KIND.value != "samples":
        raise ValueError(f"--kind={KIND.value} is not available for GANs; use --kind=samples")
      label = None if LABEL.value < 0 else np.full((NUM.value,), LABEL.value, np.int32)
      if exp.info.kind == "image":
        images = family.generate(params, state.model_state, key, NUM.value, labels=label)
      else:
        images = family.sample_grid(params, state.model_state, key, None, NUM.value)
      save_image_grid(out, np.asarray(images))
      print(out)
      return
    if KIND.value == "latent_map":
      z, labels = latent.encode_split(family, params, test, key)
      print(latent.save_latent_map(out, z, labels))
      return
    images, ncol = figures.autoencoder_figure(
      family,
      params,
      test,
      KIND.value,
      NUM.value,
      key,
      seed=SEED.value,
      temperature=TEMPERATURE.value,
      label=LABEL.value if LABEL.value >= 0 else 1,
      spherical=SPHERICAL.value,
    )
  except ValueError as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(2)
  save_image_grid(out, np.asarray(images), ncol)
  print(out)


def _flow_figure(family, params, model_state, test, key):
  """RealNVP figures: `samples` (z ~ N(0, T^2 I)), `interpolation` (rows between test
  images through z), `density` (a 2-D toy's learned density)."""
  import numpy as np

  cfg = family.cfg
  if KIND.value == "samples":
    out = family.sample(params, key, NUM.value, TEMPERATURE.value, model_state=model_state)
    if family.is_image:
      return out, None
    from genjax.eval import plots

    return plots.scatter_image(out, cfg.plot_lo, cfg.plot_hi)[None], None
  if KIND.value == "density":
    return family.density_image(params, model_state, cfg.plot_lo, cfg.plot_hi, 256)[None], None
  if KIND.value == "interpolation" and family.is_image:
    rows = max(1, NUM.value // 8)
    images = test[np.arange(2 * rows) % len(test)]["image"]
    out = family.interpolate(params, model_state, images[:rows], images[rows:], 8)
    return np.asarray(out).reshape((-1,) + out.shape[2:]), 8
  raise ValueError(
    f"--kind={KIND.value} is not available for RealNVP on {family.info.kind} data; "
    f"expected samples, interpolation (images) or density (2-D toys)"
  )


def entry() -> None:
  """The `genjax-sample` console script."""
  common.run(main)


if __name__ == "__main__":
  entry()
