"""Train a config; running it again on the same workdir resumes from the latest complete checkpoint.

  python -m experiments.train --config=configs/vae.py --workdir=runs/vae [--config.train.num_steps=N]

The workdir has one writer: a second trainer on it stops at once, naming the first.
Resuming with a config whose model, data, seed, optimizer or batch differ from the
saved `WORKDIR/config.json` is refused (more steps and other log/eval/sample/checkpoint
intervals are fine). A damaged latest checkpoint is moved aside and the previous one
used; nothing non-finite is ever saved; a full disk stops the run with one line and
leaves the last checkpoint usable.
"""

from __future__ import annotations

from genjax.cli import common


def main(argv):
  del argv
  workdir = common.require_workdir()
  from genjax.train.checkpoint import CheckpointWriteError, NonFiniteStateError
  from genjax.train.loop import NonFiniteLossError, train_and_evaluate
  from genjax.train.workdir import WorkdirBusyError, WorkdirError

  try:
    metrics = train_and_evaluate(common.CONFIG.value, workdir)
  except WorkdirError as e:  # a workdir that is a file, or cannot be created
    common.fail(str(e))
  except (WorkdirBusyError, NonFiniteLossError, NonFiniteStateError, CheckpointWriteError) as e:
    common.fail(str(e), status=1)
  if metrics:
    print("final test metrics: " + ", ".join(f"{k}={v:.6g}" for k, v in sorted(metrics.items())))


def entry() -> None:
  """The `genjax-train` console script."""
  common.run(main, __name__)


if __name__ == "__main__":
  entry()
