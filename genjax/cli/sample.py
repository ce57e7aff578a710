"""Draw a figure of a trained model as a PNG (EMA parameters where the run keeps them).

  python -m experiments.sample --workdir=runs/vae --num=64 [--kind=samples] [--config.KEY=VALUE]

Like `experiments.evaluate` it uses the run's saved config (`--config` optional) and only
reads checkpoints, so it can run while the trainer is writing them.

`--kind` is one of the figures the family declares (`Family.figures()`); every family
draws `samples`. The autoencoders add `reconstructions`, `interpolation` (`--spherical`),
`attribute` (`--label`) and `latent_map`; PixelCNN `completion`; RealNVP `interpolation`
and, on 2-D toys, `density`; DDPM `trajectory` and `interpolation`. An unknown kind is
an error that lists the family's kinds. Figures that show test examples take a fixed,
class-balanced choice of them (`--seed` changes it).

`--temperature` and `--guidance` set the family's `sampling.temperature` /
`sampling.guidance` (the same as `--config.sampling.temperature=...`; a family without
that key says so). Sampler choices are config keys too, e.g.
`--config.sampling.sampler=ddim --config.sampling.ddim_steps=50` for DDPM.
"""

from __future__ import annotations

import os

from absl import flags

from genjax.cli import common

NUM = flags.DEFINE_integer("num", 64, "Number of samples (images) in the figure.")
KIND = flags.DEFINE_string("kind", "samples", "The figure to draw: one of the family's figure kinds.")
CHECKPOINT = flags.DEFINE_string("checkpoint", "latest", "'latest', 'best', or a step number.")
OUT = flags.DEFINE_string("out", None, "Output PNG (default: WORKDIR/samples/<kind>_step_<N>.png).")
SEED = flags.DEFINE_integer(
  "seed", 0, "Sampling seed (folded into the run's sample key; also picks test examples)."
)
TEMPERATURE = flags.DEFINE_float(
  "temperature", None, "Sets sampling.temperature (VAE: prior std; PixelCNN: softmax temperature; flows: z scale)."
)
GUIDANCE = flags.DEFINE_float("guidance", None, "Sets sampling.guidance (classifier-free guidance scale).")
LABEL = flags.DEFINE_integer(
  "label", None, "A conditional model: the class to draw (default: one class per column)."
)
SPHERICAL = flags.DEFINE_boolean("spherical", False, "Spherical interpolation of codes (autoencoders).")


def _override_sampling(config) -> None:
  """Applies --temperature / --guidance to the config's sampling section, or fails naming what exists."""
  for flag, key in ((TEMPERATURE, "temperature"), (GUIDANCE, "guidance")):
    if flag.value is None:
      continue
    if key not in config.sampling:
      have = ", ".join(sorted(config.sampling.keys())) or "none"
      common.fail(f"--{key}: this model has no sampling.{key} (its sampling keys: {have})")
    with config.unlocked():
      config.sampling[key] = float(flag.value)


def main(argv):
  del argv
  workdir = common.require_workdir()
  import jax

  from genjax.eval import render
  from genjax.models import FigureOptions
  from genjax.schema import UsageError
  from genjax.train.experiment import Experiment

  config = common.reader_config(workdir)
  _override_sampling(config)
  exp = Experiment(config)
  family = exp.family
  kinds = family.figures()
  if KIND.value not in kinds:
    common.fail(
      f"--kind={KIND.value} is not a figure of family {family.name!r}; expected one of {', '.join(kinds)}"
    )
  if LABEL.value is not None and not (family.conditional or KIND.value == "attribute"):
    common.fail(f"--label={LABEL.value}: family {family.name!r} (this config) is not class-conditional")
  if LABEL.value is not None and not 0 <= LABEL.value < max(family.num_classes, 1):
    common.fail(f"--label={LABEL.value} is not valid: expected a class in [0, {family.num_classes})")
  extent = None if family.images else render.extent(exp.examples("test", 2000)["x"])
  try:
    options = FigureOptions(
      num=NUM.value, label=LABEL.value, spherical=SPHERICAL.value, seed=SEED.value, extent=extent or (-4.0, 4.0)
    )
  except ValueError as e:
    common.fail(f"--{e}")
  state, step = common.restore_or_exit(exp, workdir, CHECKPOINT.value)
  key = jax.random.fold_in(exp.sample_key(), SEED.value)
  try:
    figure = kinds[KIND.value](exp.eval_params(state), state.model_state, key, exp.splits["test"], options)
  except ValueError as e:  # a figure that does not apply to this model (say, a latent map of a 16-D latent)
    raise UsageError(f"--kind={KIND.value}: {e}") from e
  out = OUT.value or os.path.join(workdir, "samples", f"{KIND.value}_step_{step}.png")
  from genjax import distributed

  figure = distributed.to_host(figure)  # whole on every process (a collective where it is split over processes)
  if exp.process_index == 0:
    render.save_figure(out, figure, extent)
  print(out)


def entry() -> None:
  """The `genjax-sample` console script."""
  common.run(main, __name__, reader=True)


if __name__ == "__main__":
  entry()
