"""Train a config; running it again on the same workdir resumes from the latest checkpoint.

python -m experiments.train --config=configs/vae.py --workdir=runs/vae [--config.train.num_steps=N]
"""

from __future__ import annotations

import sys

from genjax.cli import common


def main(argv):
  del argv
  workdir = common.require_workdir()
  from genjax.train.loop import NonFiniteLossError, train_and_evaluate

  try:
    metrics = train_and_evaluate(common.CONFIG.value, workdir)
  except NonFiniteLossError as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(1)
  if metrics:
    print("final test metrics: " + ", ".join(f"{k}={v:.6g}" for k, v in sorted(metrics.items())))


def entry() -> None:
  """The `genjax-train` console script."""
  common.run(main, __name__)


if __name__ == "__main__":
  entry()
