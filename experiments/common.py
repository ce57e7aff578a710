"""What every launch script shares: the --config/--workdir flags and clear flag errors.

Heavy imports (jax, the models) happen inside each script's `main`, so a bad flag
fails in well under a second.
"""

from __future__ import annotations

import logging
import sys

from absl import app, flags
from ml_collections import config_flags

CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/vae.py (a preset after a colon: configs/vae.py:tiny).",
    lock_config=True)
WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, samples and the resolved config.")
DISTRIBUTED = flags.DEFINE_boolean(
    "jax_distributed", False, "Call jax.distributed.initialize() first (multi-host runs; each host runs "
    "the same command and feeds its slice of every global batch).")


def _parse(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.stderr.write(f"error: {e}\nPass --helpfull to see the flags.\n")
    sys.exit(2)
  except (AttributeError, KeyError) as e:
    # ml-collections raises these for an override of a key the config does not have.
    overrides = [a for a in argv[1:] if a.startswith("--config.")]
    detail = str(e).strip("'\"").replace("\\n", " ").replace("\n", " ")
    sys.stderr.write(f"error: unknown config key in {' '.join(overrides)}: {detail}\n"
                     f"Every key must already exist in the config file; see its get_config().\n")
    sys.exit(2)


def run(main) -> None:
  """`app.run(main)` with flag errors reported in one line and INFO logs on stderr."""

  def _main(argv):
    if CONFIG.value is None:
      sys.stderr.write("error: --config is required, e.g. --config=configs/vae.py\n")
      sys.exit(2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "jax._src.xla_bridge", "orbax"):
      logging.getLogger(noisy).setLevel(logging.WARNING)
    if DISTRIBUTED.value:
      import jax
      jax.distributed.initialize()
    from genjax.data.tfds_input import DatasetUnavailableError
    try:
      return main(argv)
    except DatasetUnavailableError as e:  # says how to get the data; a traceback adds nothing
      sys.stderr.write(f"error: {e}\n")
      sys.exit(1)

  app.run(_main, flags_parser=_parse)


def restore_or_exit(exp, workdir: str, which: str):
  """`exp.restore(workdir, which)`, or a one-line error and exit status 1 if there is no such checkpoint."""
  try:
    return exp.restore(workdir, which)
  except FileNotFoundError as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(1)


def require_workdir() -> str:
  if not WORKDIR.value:
    sys.stderr.write("error: --workdir is required\n")
    sys.exit(2)
  return WORKDIR.value
