"""What every launch script shares: the --config/--workdir flags, config resolution and one-line errors.

Heavy imports (jax, the models) happen inside each script's `main`, so a bad flag
fails in well under a second. Every usage error (a bad flag, a missing or broken
config file, an unknown preset, family or dataset, an invalid config value) ends the
script with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import logging
import os
import re
import sys

import ml_collections
from absl import app, flags
from ml_collections import config_flags

CONFIG = config_flags.DEFINE_config_file(
  "config",
  None,
  "Experiment config: a shipped config by name (vae, configs/vae.py, genjax:configs/vae.py) or a file path; "
  "presets after a colon (configs/vae.py:tiny,conv). Override any key with --config.section.key=value.",
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
PRINT_CONFIG = flags.DEFINE_boolean(
  "print_config", False, "Print the resolved config (every key and value, overrides applied) and exit."
)

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
log = logging.getLogger("genjax")


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
  return sorted(
    f[:-3] for f in os.listdir(CONFIG_DIR) if f.endswith(".py") and not f.startswith("_") and f != "default.py"
  )


def flatten_config(config, prefix: str = "") -> list[tuple[str, object]]:
  """`[(dotted key, value)]` of a ConfigDict, sorted: what `--config.<key>=<value>` can override."""
  out = []
  for key in sorted(config.keys()):
    value = config[key]
    name = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      out.extend(flatten_config(value, name + "."))
    else:
      out.append((name, value))
  return out


def fail(message: str, status: int = 2) -> None:
  """Writes `error: <message>` (one line) to stderr and exits with `status` (2: usage error)."""
  sys.stderr.write(f"error: {' '.join(str(message).split())}\n")
  sys.exit(status)


def _arg(argv: list[str], name: str) -> str | None:
  """The value of `--name=V` or `--name V` in `argv` (read before absl parses it), else None."""
  for i, a in enumerate(argv):
    if a.startswith(f"--{name}="):
      return a[len(name) + 3 :]
    if a == f"--{name}" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _check_config_file(spec: str) -> None:
  """A one-line error for a config that cannot be found or loaded (before ml-collections' traceback)."""
  path = spec.partition(":")[0]
  if not os.path.isfile(path):
    fail(
      f"--config={spec}: no such file, and no shipped config of that name; shipped: {', '.join(shipped_configs())}"
    )


def _help(main_module: str) -> None:
  """`--help`: the command's own flags and the shared ones (absl's default lists only the __main__ module's)."""
  doc = sys.modules[main_module].__doc__ or ""
  print(doc.strip() + "\n")
  for module in (main_module, __name__):
    for flag in sorted(flags.FLAGS.get_flags_for_module(module), key=lambda f: f.name):
      default = "" if flag.default is None else f" (default: {flag.default_as_str})"
      print(f"  --{flag.name}: {' '.join((flag.help or '').split())}{default}")
  print("\n  --config.<section>.<key>=<value>: override a config key (--print_config lists them all)")
  print("  --helpfull: every flag, including JAX's and absl's")


def _parse(argv: list[str], main_module: str, reader: bool) -> list[str]:
  if any(a in ("--help", "-h", "-?") for a in argv[1:]):
    _help(main_module)
    sys.exit(0)
  workdir = _arg(argv, "workdir")
  if reader and _arg(argv, "config") is None and workdir:  # the run's own config.json
    # First: ml-collections defines the --config.KEY override flags when it reads --config.
    argv = [argv[0], f"--config={os.path.join(CONFIG_DIR, '_saved.py')}:{workdir}", *argv[1:]]
  out = []
  for a in argv:
    if a.startswith("--config="):
      a = "--config=" + resolve_config_path(a[len("--config=") :])
    out.append(a)
  spec, given = _arg(out, "config"), _arg(argv, "config")
  if spec is not None:
    _check_config_file(spec)
  try:
    return flags.FLAGS(out)
  except flags.Error as e:
    text = str(e)
    if "Error whilst parsing config file" in text:  # the config file or a preset raised: keep its last line
      last = re.findall(r"(\w+(?:Error|Exception)): (.*)$", text.strip(), flags=re.S)
      fail(f"--config={given}: {last[-1][1] if last else text}")
    fail(f"{text} (see --help)")
  except (AttributeError, KeyError) as e:
    # ml-collections raises these for an override of a key the config does not have.
    overrides = [a for a in out[1:] if a.startswith("--config.")]
    detail = str(e).strip("'\"")
    fail(
      f"unknown config key in {' '.join(overrides)}: {detail}; every key must already exist in the config "
      f"(--print_config lists them)"
    )
  except Exception as e:  # noqa: BLE001 - a broken config file or preset: say which, in one line
    fail(f"--config={given}: {type(e).__name__}: {e}")


def run(main, main_module: str, reader: bool = False) -> None:
  """`app.run(main)` with usage errors in one line (exit 2), `--help` for the command's flags,
  `--print_config`, and INFO logs on stderr. The process first re-executes itself with
  huge pages for malloc where that helps (`genjax.hugepages`).

  A `reader` (evaluate, sample) without `--config` uses the config saved in `--workdir`.
  With `GENJAX_*` multi-process variables set (`python -m genjax.launch`) or with
  `--jax_distributed` (a cluster scheduler's variables), JAX's distributed runtime starts
  first, and an error on one process stops every process quickly.
  """

  def _main(argv):
    if CONFIG.value is None:
      fail(
        "--config is required, e.g. --config=configs/vae.py (or a shipped name: "
        + ", ".join(shipped_configs())
        + ")"
      )
    if PRINT_CONFIG.value:
      print("\n".join(f"{key} = {value!r}" for key, value in flatten_config(CONFIG.value)))
      sys.exit(0)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "jax._src.xla_bridge", "orbax"):
      logging.getLogger(noisy).setLevel(logging.WARNING)
    # Orbax's failed write tasks (a full disk) are also logged by asyncio as "never retrieved", with
    # tracebacks; the checkpoint writer reports the failure itself, in one line.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    from genjax import xla_flags

    # Before anything starts JAX's backend; never over the user's XLA_FLAGS. The trainer's start-up
    # line reports the choice (logged here, it would come before a usage error's one line).
    xla_flags.apply(CONFIG.value, log=log.debug)
    from genjax import distributed

    try:
      multi = distributed.initialize_from_env(cluster=DISTRIBUTED.value)
    except ValueError as e:  # a bad GENJAX_* variable, or --jax_distributed outside a cluster
      fail(str(e))
    from genjax.data.errors import DataConfigError
    from genjax.data.tfds_input import DatasetUnavailableError
    from genjax.schema import UsageError
    from genjax.train.checkpoint import CheckpointError, CheckpointMismatchError
    from genjax.train.workdir import ConfigFileError

    with distributed.exit_fast_on_error() if multi else _nothing():
      try:
        return main(argv)
      except (UsageError, DataConfigError, CheckpointMismatchError, ConfigFileError) as e:
        fail(str(e))
      except (DatasetUnavailableError, CheckpointError, distributed.PeerError) as e:  # a traceback adds nothing
        fail(str(e), status=1)

  from genjax import hugepages

  hugepages.reexec()  # first: glibc reads its malloc tunables only when a process starts
  app.run(_main, flags_parser=lambda argv: _parse(argv, main_module, reader))


class _nothing:
  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False


def reader_config(workdir: str):
  """The config a reader (evaluate, sample) uses: the run's saved config with the command line's
  overrides on top (`--config` given too: its file supplies only what the saved run lacks)."""
  from genjax.train import workdir as workdir_lib

  config = CONFIG.value
  if _arg(sys.argv, "config") is None:
    return config  # already the saved config (see _parse), with the overrides applied
  saved = workdir_lib.load_saved_config(workdir)
  if saved is None:
    return config
  overrides = config_flags.get_override_values(flags.FLAGS["config"])
  try:
    return workdir_lib.apply_saved_config(config, saved, except_keys=overrides.keys())
  except ValueError as e:
    fail(f"--config does not fit the run saved in {workdir}: {e}")


def restore_or_exit(exp, workdir: str, which: str):
  """`exp.restore(workdir, which)` (read-only, past damaged checkpoints), or a one-line error: status 1
  when there is no usable checkpoint, 2 for a bad `--checkpoint` or a checkpoint of another config."""
  from genjax.train.checkpoint import CheckpointError, CheckpointMismatchError

  try:
    return exp.restore(workdir, which)
  except CheckpointMismatchError as e:
    fail(str(e))
  except CheckpointError as e:
    fail(str(e), status=1)
  except ValueError as e:  # --checkpoint is not 'latest', 'best' or a step number
    fail(f"--checkpoint: {e}")


def require_workdir() -> str:
  if not WORKDIR.value:
    fail("--workdir is required")
  return WORKDIR.value
