"""Mode collapse measured over seeds: trains every (target, variant, seed) of a config and scores its samples.

  python -m experiments.mode_collapse_study --study_config=gan_toy --workdir=runs/bimodal_study \\
      [--targets=bimodal_near,bimodal_far] [--variants=minimax,non_saturating] [--study_preset=lecture] \\
      [--seeds=0,1,2,3,4] [--picture=PNG]

For every target preset, variant preset and seed it trains
`configs/<study_config>.py:<target>,<variant>,<study_preset>` with `config.seed = seed`
(one workdir per run; a finished run is only re-scored, an unfinished one resumed),
scores the last checkpoint with `genjax.eval.sample_metrics.vector_statistics` (the
fraction of samples nearest each mode, modes covered, high-quality fraction, and the
family's own statistics such as a GAN's gap between D and D*), prints one row per run and
a summary per (target, variant), and writes everything to WORKDIR/study.json. A run is
*collapsed* when fewer than all modes are covered (`mode_statistics`: a mode counts
when at least N / K / 4 of the N samples are high quality, within 3 std, at it).
It works for any family that trains on a toy with Gaussian modes.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import time

from absl import app, flags
from absl import logging as absl_logging

from genjax.cli import common  # --workdir (shared with the other scripts)

CONFIG = flags.DEFINE_string("study_config", None, "The shipped config whose presets are studied (e.g. gan_toy).")
TARGETS = flags.DEFINE_list("targets", ["bimodal_near", "bimodal_far"], "Target presets (toys with modes).")
VARIANTS = flags.DEFINE_list("variants", ["minimax", "non_saturating"], "Variant presets compared on each target.")
PRESET = flags.DEFINE_string("study_preset", "lecture", "Extra presets applied to every run, comma-separated.")
SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Seeds (config.seed) of each (target, variant).")
PICTURE = flags.DEFINE_string(
  "picture",
  "",
  "If set, a PNG of histograms (test data | samples; one row per target) of the first (variant, seed) whose "
  "last target collapsed and whose first did not (1-D toys).",
)
NUM = flags.DEFINE_integer("study_samples", 10000, "Generated samples scored per run.")
#: The interval of the histogram picture.
PICTURE_RANGE = (-6.0, 6.0)


def study_row(family, params, model_state, splits, key, num: int) -> dict:
  """The statistics of `num` samples of one trained run (`sample_metrics.vector_statistics`) plus
  `collapsed` (fewer modes covered than the target has)."""
  from genjax.eval.sample_metrics import SampleStatistics, vector_statistics

  stats = vector_statistics(family, params, model_state, splits, SampleStatistics(num, key))
  stats["collapsed"] = bool(stats["modes_covered"] < len(stats["mode_fractions"]))
  return stats


def save_picture(path: str, runs: dict, rows: list, num: int) -> str | None:
  """Writes the histogram picture (see --picture); returns a caption, or None if no (variant, seed) fits."""
  import jax
  import numpy as np

  from genjax.eval.render import histogram_image, save_image_grid
  from genjax.eval.sample_metrics import generate_many

  first, last = TARGETS.value[0], TARGETS.value[-1]
  for variant in reversed(VARIANTS.value):
    for seed in sorted({r["seed"] for r in rows}):
      by = {r["target"]: r for r in rows if r["variant"] == variant and r["seed"] == seed}
      if len(by) == len(TARGETS.value) and by[last]["collapsed"] and not by[first]["collapsed"]:
        tiles = []
        for target in TARGETS.value:
          exp, state = runs[target, variant, seed]
          data = exp.splits["test"][np.arange(len(exp.splits["test"]))]["x"]
          key = jax.random.fold_in(exp.sample_key(), 1)
          fake = generate_many(exp.family, exp.eval_params(state), state.model_state, key, num)
          tiles += [histogram_image(data, *PICTURE_RANGE), histogram_image(fake, *PICTURE_RANGE)]
        save_image_grid(path, np.stack([np.asarray(t) for t in tiles]), ncol=2)
        lo, hi = PICTURE_RANGE
        rows_ = ", ".join(TARGETS.value)
        return f"{variant}, seed {seed}: rows {rows_}; columns test data / {num} samples; x in [{lo}, {hi}]"
  return None


def _gap(row: dict, key: str) -> str:
  return f" |D-D*| {key.split('_')[-1]} {row[key]:.3f}" if key in row else ""


def main(argv):
  del argv
  if not CONFIG.value:
    common.fail("--study_config is required (a shipped config name, e.g. gan_toy)")
  root = common.WORKDIR.value or "runs/mode_collapse_study"
  logging.basicConfig(level=logging.WARNING)
  absl_logging.set_verbosity(absl_logging.WARNING)
  import jax

  from genjax.train.experiment import Experiment
  from genjax.train.loop import train_and_evaluate

  name = os.path.basename(CONFIG.value).removesuffix(".py")
  if name not in common.shipped_configs():
    common.fail(
      f"--study_config={CONFIG.value}: no shipped config of that name; shipped: {common.shipped_configs()}"
    )
  module = importlib.import_module(f"genjax.configs.{name}")
  rows, runs = [], {}
  for target in TARGETS.value:
    for variant in VARIANTS.value:
      for seed in SEEDS.value:
        preset = ",".join(p for p in (target, variant, PRESET.value) if p)
        config = module.get_config(preset)
        config.seed = int(seed)
        workdir = os.path.join(root, f"{target}_{variant}_seed{seed}")
        t0 = time.perf_counter()
        train_and_evaluate(config, workdir)
        exp = Experiment(config)
        state, step = exp.restore(workdir, "latest")
        key = jax.random.fold_in(exp.sample_key(), 1)
        stats = study_row(exp.family, exp.eval_params(state), state.model_state, exp.splits, key, NUM.value)
        row = {"target": target, "variant": variant, "seed": int(seed), "step": step, "preset": preset}
        row.update(train_seconds=time.perf_counter() - t0, **stats)
        rows.append(row)
        runs[target, variant, int(seed)] = (exp, state)
        shares = "/".join(f"{f:.3f}" for f in row["mode_fractions"])
        print(
          f"{target:13s} {variant:15s} seed {seed}: per mode {shares} covered {row['modes_covered']:.0f} "
          f"hq {row['high_quality_fraction']:.3f}{_gap(row, 'd_gap_mean')}{_gap(row, 'd_gap_max')}  "
          f"({row['train_seconds']:.0f} s)",
          flush=True,
        )
  print("\ntarget        variant         collapsed  mean hq  mean |D-D*|")
  summary = []
  for target in TARGETS.value:
    for variant in VARIANTS.value:
      rs = [r for r in rows if r["target"] == target and r["variant"] == variant]
      s = {
        "target": target,
        "variant": variant,
        "runs": len(rs),
        "collapsed": sum(r["collapsed"] for r in rs),
        "high_quality_fraction": sum(r["high_quality_fraction"] for r in rs) / len(rs),
      }
      if all("d_gap_mean" in r for r in rs):
        s["d_gap_mean"] = sum(r["d_gap_mean"] for r in rs) / len(rs)
      summary.append(s)
      gap = f"{s['d_gap_mean']:.3f}" if "d_gap_mean" in s else "-"
      print(
        f"{target:13s} {variant:15s} {s['collapsed']} / {s['runs']}     {s['high_quality_fraction']:.3f}    {gap}"
      )
  os.makedirs(root, exist_ok=True)
  record = {"config": name, "preset": PRESET.value, "seeds": [int(s) for s in SEEDS.value], "runs": rows}
  with open(os.path.join(root, "study.json"), "w") as f:
    json.dump(dict(record, summary=summary), f, indent=2)
  if PICTURE.value:
    caption = save_picture(PICTURE.value, runs, rows, NUM.value)
    print(f"picture {PICTURE.value}: {caption}" if caption else "no (variant, seed) with that collapse pattern")


def entry() -> None:
  app.run(main)


if __name__ == "__main__":
  entry()
