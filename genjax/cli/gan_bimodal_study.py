"""Mode collapse on the 1-D bimodal targets, measured over seeds.

  python -m experiments.gan_bimodal_study --workdir=runs/bimodal_study [--study_preset=lecture] [--seeds=0,1,2,3,4]

Trains `configs/gan_toy.py:{bimodal_near|bimodal_far},{minimax|non_saturating},PRESET`
for every seed (`config.seed`), scores the last checkpoint with
`genjax.eval.sample_metrics.toy_statistics` (fraction of samples nearest each mode,
modes covered, high-quality fraction, D vs D*), prints one table row per run and a
summary per (target, loss), and writes everything to WORKDIR/study.json. A run is
*collapsed* when fewer than all modes are covered (`mode_statistics`: a mode counts
when at least N / K / 4 of the N samples are high quality (within 3 std) at it).
Runs already trained in WORKDIR are resumed (a finished one is only re-scored).
"""

from __future__ import annotations

import json
import logging
import os
import time

from absl import app, flags
from absl import logging as absl_logging

from genjax.cli import common  # --workdir (shared with the other scripts)

TARGETS = ("bimodal_near", "bimodal_far")
LOSSES = ("minimax", "non_saturating")
PRESET = flags.DEFINE_string("study_preset", "lecture", "Extra presets of configs/gan_toy.py, comma-separated.")
SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Seeds (config.seed) of each (target, loss).")
PICTURE = flags.DEFINE_string(
  "picture",
  "",
  "If set, a PNG of histograms (test data | GAN samples; near row, far "
  "row) of the first seed whose far run collapsed and near run did not (same loss).",
)
NUM = flags.DEFINE_integer("study_samples", 10000, "Generated samples scored per run.")


def study_row(exp, state, num: int) -> dict:
  """The toy statistics of `num` samples of one trained run (`sample_metrics.toy_statistics`) plus
  `collapsed` (fewer modes covered than the target has)."""
  import jax

  from genjax.eval.sample_metrics import toy_statistics

  stats = toy_statistics(
    exp, exp.eval_params(state), state.model_state, jax.random.fold_in(exp.sample_key(), 1), num
  )
  stats["collapsed"] = bool(stats["modes_covered"] < len(stats["mode_fractions"]))
  return stats


def save_picture(path: str, runs: dict, rows: list, num: int) -> str | None:
  """Writes the histogram picture (see --picture) over [-6, 6]; returns a caption, or None if no seed fits."""
  import jax
  import numpy as np

  from genjax.eval.grids import save_image_grid
  from genjax.eval.plots import histogram_image
  from genjax.eval.sample_metrics import generate_many

  for loss in ("non_saturating", "minimax"):
    for seed in sorted({r["seed"] for r in rows}):
      by = {r["target"]: r for r in rows if r["loss"] == loss and r["seed"] == seed}
      if len(by) == 2 and by["bimodal_far"]["collapsed"] and not by["bimodal_near"]["collapsed"]:
        tiles = []
        for target in TARGETS:
          exp, state = runs[target, loss, seed]
          data = exp.splits["test"][np.arange(len(exp.splits["test"]))]["x"]
          fake = generate_many(
            exp.family, exp.eval_params(state), state.model_state, jax.random.fold_in(exp.sample_key(), 1), num
          )
          tiles += [histogram_image(data, -6.0, 6.0), histogram_image(fake, -6.0, 6.0)]
        save_image_grid(path, np.stack([np.asarray(t) for t in tiles]), ncol=2)
        return f"{loss}, seed {seed}: rows near / far, columns test data / {num} GAN samples, x in [-6, 6]"
  return None


def main(argv):
  del argv
  root = common.WORKDIR.value or "runs/bimodal_study"
  logging.basicConfig(level=logging.WARNING)
  absl_logging.set_verbosity(absl_logging.WARNING)
  from genjax.configs import gan_toy
  from genjax.train.experiment import Experiment
  from genjax.train.loop import train_and_evaluate

  rows, runs = [], {}
  for target in TARGETS:
    for loss in LOSSES:
      for seed in SEEDS.value:
        preset = ",".join(p for p in (target, loss, PRESET.value) if p)
        config = gan_toy.get_config(preset)
        config.seed = int(seed)
        workdir = os.path.join(root, f"{target}_{loss}_seed{seed}")
        t0 = time.perf_counter()
        train_and_evaluate(config, workdir)
        exp = Experiment(config)
        state, step = exp.restore(workdir, "latest")
        row = {
          "target": target,
          "loss": loss,
          "seed": int(seed),
          "step": step,
          "preset": preset,
          "train_seconds": time.perf_counter() - t0,
          **study_row(exp, state, NUM.value),
        }
        rows.append(row)
        runs[target, loss, int(seed)] = (exp, state)
        print(
          f"{target:13s} {loss:15s} seed {seed}: per mode {row['mode_fractions'][0]:.3f}/"
          f"{row['mode_fractions'][1]:.3f} covered {row['modes_covered']} hq {row['high_quality_fraction']:.3f} "
          f"|D-D*| mean {row['d_gap_mean']:.3f} max {row['d_gap_max']:.3f}  ({row['train_seconds']:.0f} s)",
          flush=True,
        )
  print("\ntarget        loss            collapsed  mean hq  mean |D-D*|")
  summary = []
  for target in TARGETS:
    for loss in LOSSES:
      rs = [r for r in rows if r["target"] == target and r["loss"] == loss]
      s = {
        "target": target,
        "loss": loss,
        "runs": len(rs),
        "collapsed": sum(r["collapsed"] for r in rs),
        "high_quality_fraction": sum(r["high_quality_fraction"] for r in rs) / len(rs),
        "d_gap_mean": sum(r["d_gap_mean"] for r in rs) / len(rs),
      }
      summary.append(s)
      print(
        f"{target:13s} {loss:15s} {s['collapsed']} / {s['runs']}     {s['high_quality_fraction']:.3f}    "
        f"{s['d_gap_mean']:.3f}"
      )
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, "study.json"), "w") as f:
    json.dump(
      {"preset": PRESET.value, "seeds": [int(s) for s in SEEDS.value], "runs": rows, "summary": summary},
      f,
      indent=2,
    )
  if PICTURE.value:
    caption = save_picture(PICTURE.value, runs, rows, NUM.value)
    print(
      f"picture {PICTURE.value}: {caption}" if caption else "no seed with a collapsed far and covered near run"
    )


def entry() -> None:
  app.run(main)


if __name__ == "__main__":
  entry()
