"""What every launch script shares: the --config/--workdir flags and clear flag errors.

Heavy imports (jax, the models) happen inside each script's `main`, so a bad flag
fails in well under a second.
"""

from __future__ import annotations

import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

CONFIG = config_flags.DEFINE_config_file(
  "config",
  None,
  "Experiment config file, e.g. configs/vae.py (a preset after a colon: configs/vae.py:tiny).",
  lock_config=True,
)
WORKDIR = flags.DEFINE_string(
  "workdir", None, "Directory for checkpoints, metrics, samples and the resolved config."
)
DISTRIBUTED = flags.DEFINE_boolean(
  "jax_distributed",
  False,
  "Call jax.distributed.initialize() first (multi-host runs; each host runs "
  "the same command and feeds its slice of every global batch).",
)


CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def resolve_config_path(spec: str) -> str:
  """Turns a `--config` value into a config file path (a preset after a colon is kept).

  An existing file is used as given. Otherwise a shipped config is found by name, so
  the same command works from the source tree and from an installed wheel:
  `vae`, `vae.py`, `configs/vae.py` and `genjax:configs/vae.py` all name
  `genjax/configs/vae.py`. Anything else is returned unchanged (and fails to load with
  its own message).
  """
  path, sep, preset = spec.partition(":")
  if path == "genjax":  # genjax:configs/vae.py[:preset]
    path, sep, preset = preset.partition(":")
  if os.path.isfile(path):
    return spec
  name = os.path.basename(path)
  name = name[:-3] if name.endswith(".py") else name
  shipped = os.path.join(CONFIG_DIR, f"{name}.py")
  if os.path.dirname(path) in ("", "configs") and name and os.path.isfile(shipped):
    return shipped + (sep + preset if sep else "")
  return spec


def shipped_configs() -> list[str]:
  """Names of the configs shipped in `genjax/configs/` (what `--config=NAME` accepts)."""
  return sorted(f[:-3] for f in os.listdir(CONFIG_DIR) if f.endswith(".py") and not f.startswith("_"))


def _resolve_argv(argv: list[str]) -> list[str]:
  out = []
  for a in argv:
    if a.startswith("--config="):
      a = "--config=" + resolve_config_path(a[len("--config=") :])
    out.append(a)
  return out


def _parse(argv: list[str]) -> list[str]:
  argv = _resolve_argv(argv)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.stderr.write(f"error: {e}\nPass --helpfull to see the flags.\n")
    sys.exit(2)
  except (AttributeError, KeyError) as e:
    # ml-collections raises these for an override of a key the config does not have.
    overrides = [a for a in argv[1:] if a.startswith("--config.")]
    detail = str(e).strip("'\"").replace("\\n", " ").replace("\n", " ")
    sys.stderr.write(
      f"error: unknown config key in {' '.join(overrides)}: {detail}\n"
      f"Every key must already exist in the config file; see its get_config().\n"
    )
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
    from genjax import xla_flags

    xla_flags.apply(CONFIG.value)  # before anything starts JAX's backend; never overrides XLA_FLAGS
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
