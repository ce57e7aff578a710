"""A run's working directory: one trainer at a time, and its saved config as the run's truth.

    workdir/.lock          the trainer's exclusive lock; records who holds it (pid, host, since)
    workdir/config.json    the resolved config of the run's first successful start
    workdir/checkpoints/   written by `genjax.train.checkpoint.Checkpointer` only

The trainer calls `lock_workdir` before it touches anything else and keeps the lock for its
lifetime; `fcntl.flock` locks belong to the open file, so the kernel releases them when the
process dies, however it dies (`kill -9` included): a killed run never leaves a stale lock.
Readers (evaluate, sample, benchmarks, library code) never take the lock and never create
or change anything here; `load_saved_config` and `lock_record` only read.

`config.json` is written once (`commit_config`, atomically), after the trainer has built or
restored its state, and never overwritten by a later start. A resume compares the new
config with it (`check_resume`) and refuses, in one line, when keys that define the run
differ; see `RESUME_MAY_CHANGE` for the keys that may change and why.
"""

from __future__ import annotations

import copy
import datetime
import errno
import fcntl
import fnmatch
import json
import os
import socket
import sys
import time
from typing import Any

LOCK_FILE = ".lock"
CONFIG_FILE = "config.json"


class WorkdirError(ValueError):
  """The workdir path cannot be used: it is a file, or it cannot be created or written."""


class WorkdirBusyError(RuntimeError):
  """Another live process holds the directory's lock; the message names it."""


class ConfigFileError(ValueError):
  """A saved config.json that cannot be read or parsed."""


# ---------------------------------------------------------------------------------- lock


class DirectoryLock:
  """An exclusive `fcntl.flock` on a lock file, held until `release()` or process death.

  The file is created if missing (so only writers may use this) and never deleted: an
  unlinked lock file would let a second process lock a new inode while the first still
  holds the old one. Its content (JSON: pid, host, since, argv) describes the current
  holder and is only meaningful while the lock is held.
  """

  def __init__(self, path: str, what: str = "workdir"):
    self.path = os.path.abspath(path)
    self.what = what
    self._fd: int | None = None

  @property
  def held(self) -> bool:
    return self._fd is not None

  def acquire(self) -> DirectoryLock:
    """Takes the lock or raises `WorkdirBusyError` naming the holder; OSError if the file cannot be opened."""
    if self._fd is not None:
      return self
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      os.close(fd)
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise
      raise WorkdirBusyError(
        f"{self.what} {os.path.dirname(self.path)} is in use by {_describe_holder(self.path)} "
        f"(lock {self.path}); wait for it to finish or stop it"
      ) from None
    record = {
      "pid": os.getpid(),
      "host": socket.gethostname(),
      "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
      "argv": sys.argv,
    }
    data = json.dumps(record).encode()
    try:
      os.ftruncate(fd, 0)
      os.pwrite(fd, data, 0)
      os.fsync(fd)
    except OSError:
      pass  # the lock is what matters; the record is a courtesy (a full disk must not stop it)
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is not None:
      fd, self._fd = self._fd, None
      os.close(fd)  # closing the last descriptor of the open file drops the flock

  def __enter__(self) -> DirectoryLock:
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()

  def __del__(self):
    try:
      self.release()
    except Exception:  # noqa: BLE001 - interpreter shutdown
      pass


def _read_record(path: str) -> dict | None:
  try:
    with open(path) as f:
      record = json.loads(f.read())
  except (OSError, ValueError):
    return None
  return record if isinstance(record, dict) else None


def _describe_holder(path: str) -> str:
  record = _read_record(path)
  if record is None:  # the holder may be between taking the lock and writing its record
    time.sleep(0.2)
    record = _read_record(path)
  if record is None:
    return "another process (its lock record is unreadable)"
  return f"pid {record.get('pid')} on host {record.get('host')}, running since {record.get('since')}"


def lock_workdir(workdir: str) -> DirectoryLock:
  """The trainer's exclusive lock on `workdir` (created if missing).

  Raises `WorkdirBusyError` (another trainer runs there; the message names its pid, host
  and start time) or `WorkdirError` (the path is a file, or cannot be created or written).
  Keep the returned lock for the whole run; `release()` it at the end (process death
  releases it too).
  """
  workdir = os.path.abspath(workdir)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f"workdir {workdir} is a file; expected a directory (or a path that does not exist yet)")
  try:
    os.makedirs(workdir, exist_ok=True)
    return DirectoryLock(os.path.join(workdir, LOCK_FILE), "workdir").acquire()
  except OSError as e:
    raise WorkdirError(f"cannot use workdir {workdir}: {e.strerror or e}") from None


def lock_record(workdir: str) -> dict | None:
  """The last lock holder's record ({'pid', 'host', 'since', 'argv'}) or None; reads only.

  The record does not say whether that process still runs (only the lock does, and
  readers never touch the lock).
  """
  return _read_record(os.path.join(os.path.abspath(workdir), LOCK_FILE))


# ---------------------------------------------------------------------------------- config


def config_path(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), CONFIG_FILE)


def load_saved_config(workdir: str) -> dict | None:
  """The run's saved config as a nested dict, or None if the workdir has none; reads only.

  Raises `ConfigFileError` (one line) if config.json exists but cannot be read or parsed.
  """
  path = config_path(workdir)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      saved = json.load(f)
  except OSError as e:
    raise ConfigFileError(f"cannot read the saved config {path}: {e.strerror or e}") from None
  except ValueError as e:
    raise ConfigFileError(f"the saved config {path} is not valid JSON: {e}") from None
  if not isinstance(saved, dict):
    raise ConfigFileError(f"the saved config {path} holds a {type(saved).__name__}, expected a JSON object")
  return saved


def commit_config(workdir: str, config_json: str, replace: bool = False) -> bool:
  """Writes `config_json` as the workdir's config.json, atomically; returns whether it wrote.

  Call it once the trainer has built or restored its state (a start that fails earlier
  leaves no config behind). An existing config.json is kept (returns False) unless
  `replace`: pass `replace=True` only when the workdir holds no checkpoint made under the
  old config, i.e. nothing was ever saved. The file appears complete or not at all
  (written to a temporary file, fsynced, renamed).
  """
  try:
    parsed = json.loads(config_json)
  except ValueError as e:
    raise ValueError(f"config_json is not valid JSON: {e}") from None
  if not isinstance(parsed, dict):
    raise ValueError(f"config_json must hold a JSON object, got a {type(parsed).__name__}")
  path = config_path(workdir)
  if os.path.exists(path) and not replace:
    return False
  tmp = f"{path}.tmp-{os.getpid()}"
  try:
    with open(tmp, "w") as f:
      f.write(config_json)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  _fsync_dir(os.path.dirname(path))
  return True


def _fsync_dir(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


#: Keys that may differ between the saved config and the config of a resumed run.
#: Each one only decides when the run stops, what it reports, or how it draws samples,
#: never the trained state after a given step:
#:
#: - `train.num_steps`: where the run stops ("run it again with a larger num_steps").
#:   With a decaying schedule and `optim.schedule_steps=0` the schedule's horizon follows
#:   it, so the learning rate after the resume point differs from the original plan;
#:   `horizon_change` describes that, and setting `optim.schedule_steps` to the old horizon
#:   keeps the original schedule.
#: - `optim.schedule_steps`: the schedule's horizon, for exactly that purpose.
#: - `train.log_every`, `train.eval_every`, `train.sample_every`, `train.checkpoint_every`,
#:   `train.progress_bar`, `train.tensorboard`: when metrics, samples and checkpoints are
#:   written. Evaluation and sampling use their own keys, never the training key.
#: - `eval.*` except `eval.use_ema`: how evaluation is run and how much of it. `use_ema`
#:   must match because it decides which parameters the saved metrics, and so the best
#:   checkpoint, describe.
#: - `checkpoint.*`: retention only.
#: - `num_devices`: data parallelism; the step's key and batch do not depend on it, so a
#:   run continues to float tolerance (not bit for bit) on another device count.
#: - `data.data_dir`, `data.download`: where the same dataset is found.
#: - `sampling.*`: how samples are drawn (temperature, sampler, steps, guidance); training
#:   never reads them.
#:
#: Everything else must match, in particular `seed`, every other `model.*` and `data.*`
#: key, every other `optim.*` key (the update rule and the optimizer state's layout),
#: `train.batch_size` (the data order and the data position) and `train.ema_decay` /
#: `train.ema_warmup` (the EMA update). A key present in one config only counts as differing.
RESUME_MAY_CHANGE: tuple[str, ...] = (
  "train.num_steps",
  "optim.schedule_steps",
  "train.log_every",
  "train.eval_every",
  "train.sample_every",
  "train.checkpoint_every",
  "train.progress_bar",
  "train.tensorboard",
  "eval.*",
  "checkpoint.*",
  "num_devices",
  "data.data_dir",
  "data.download",
  "sampling.*",
  "train.profile_steps",
)
#: Exceptions to `RESUME_MAY_CHANGE` (checked first).
RESUME_MUST_MATCH: tuple[str, ...] = ("eval.use_ema",)

_ABSENT = "(absent)"

#: Keys added to the configs after runs had been saved without them, with the value that does what
#: those runs did: a config.json that lacks one is read as holding this value (by `changed_keys`, so
#: an older run resumes unless the key is now set otherwise, and by `genjax/configs/_saved.py`).
#: Only keys the other config declares are filled (`model.remat` exists for the U-Net families only).
ADDED_KEYS: dict[str, Any] = {
  "model.dtype": "float32",
  "model.param_dtype": "float32",
  "model.remat": False,
  "model.conditional": False,  # DDPM: classifier-free guidance
  "model.label_dropout": 0.0,
  "sampling.guidance": 0.0,
  "sampling.sampler": "cached",  # PixelCNN (the same samples as the full recompute); others always saved it
}


def flatten_config(config: dict, prefix: str = "") -> dict[str, Any]:
  """`{'a': {'b': 1}}` -> `{'a.b': 1}`; an empty section stays as `{'a': {}}`."""
  out: dict[str, Any] = {}
  for key, value in config.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict) and value:
      out.update(flatten_config(value, name + "."))
    else:
      out[name] = value
  return out


def _normalize(config: Any) -> dict:
  """A nested dict of JSON values (a ConfigDict or a dict with tuples becomes what config.json holds)."""
  if hasattr(config, "to_json_best_effort"):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(config))


def _flat_pair(saved: Any, new: Any) -> tuple[dict, dict]:
  """Both configs flattened; `ADDED_KEYS` that `new` declares and `saved` lacks take their old value."""
  a, b = flatten_config(_normalize(saved)), flatten_config(_normalize(new))
  a.update({k: v for k, v in ADDED_KEYS.items() if k in b and k not in a})
  return a, b


def changed_keys(saved: Any, new: Any) -> list[str]:
  """Every dotted key whose value differs (or exists in one config only), sorted. A key of
  `ADDED_KEYS` missing from `saved` counts as holding its old value there."""
  a, b = _flat_pair(saved, new)
  return sorted(k for k in a.keys() | b.keys() if (k in a) != (k in b) or a.get(k) != b.get(k))


def may_change_on_resume(key: str) -> bool:
  if any(fnmatch.fnmatchcase(key, p) for p in RESUME_MUST_MATCH):
    return False
  return any(fnmatch.fnmatchcase(key, p) for p in RESUME_MAY_CHANGE)


def check_resume(saved: Any, new: Any) -> list[str]:
  """The differing keys that may NOT change on resume (see `RESUME_MAY_CHANGE`), sorted.

  `saved` and `new` are configs as nested dicts (config.json) or ConfigDicts. An empty
  list means the run may resume; otherwise refuse with `format_changes(saved, new, keys)`.
  """
  return [k for k in changed_keys(saved, new) if not may_change_on_resume(k)]


def format_changes(saved: Any, new: Any, keys: list[str]) -> str:
  """One line: `model.hidden: saved [64, 32], now [128, 32]; seed: saved 0, now 1`."""
  a, b = _flat_pair(saved, new)

  def show(d, k):
    return json.dumps(d[k]) if k in d else _ABSENT

  return "; ".join(f"{k}: saved {show(a, k)}, now {show(b, k)}" for k in keys)


def horizon_change(saved: Any, new: Any) -> str | None:
  """A sentence if the learning-rate schedule's horizon differs between the two configs, else None."""
  a, b = flatten_config(_normalize(saved)), flatten_config(_normalize(new))

  def horizon(d):
    if d.get("optim.schedule", "constant") == "constant":
      return None
    return d.get("optim.schedule_steps") or d.get("train.num_steps")

  ha, hb = horizon(a), horizon(b)
  if ha == hb or ha is None or hb is None:
    return None
  return (
    f"the {b.get('optim.schedule')} learning-rate schedule's horizon changes from {ha} to {hb} steps, so the "
    f"learning rate from the resume point on differs from the original run's "
    f"(set --config.optim.schedule_steps={ha} to keep it)"
  )


def apply_saved_config(config: Any, saved: dict, except_keys: Any = ()) -> Any:
  """A copy of the ConfigDict `config` carrying the saved run's values (readers use this).

  Every key of `saved` is set on the copy, except those in `except_keys` (the command
  line's explicit overrides, e.g. `config_flags.get_override_values(FLAG)` flattened,
  which stay on top). Lists become tuples where `config` holds a tuple. Keys that
  `config` declares but `saved` lacks (added since the run started) keep their default.
  Raises ValueError naming a saved key that `config` does not declare or whose saved
  value has the wrong type.
  """
  out = copy.deepcopy(config)
  skip = set(except_keys)
  for key, value in flatten_config(saved).items():
    if key in skip:
      continue
    *parents, name = key.split(".")
    node = out
    try:
      for p in parents:
        node = node[p]
      current = node[name]
    except (KeyError, AttributeError, TypeError):
      raise ValueError(
        f"the saved config has key {key!r}, which this config does not declare; "
        f"was the run trained with another config file?"
      ) from None
    if isinstance(current, tuple) and isinstance(value, list):
      value = _as_tuple(value)
    if isinstance(value, dict) and not value and hasattr(current, "keys"):
      continue  # an empty section
    try:
      node[name] = value
    except (TypeError, ValueError) as e:
      raise ValueError(f"the saved config's {key}={value!r} does not fit this config ({current!r}): {e}") from None
  return out


def config_from_saved(saved: dict) -> Any:
  """The saved config as an `ml_collections.ConfigDict`, for a reader run without `--config`.

  config.json holds the fully resolved config, so nothing else is needed; JSON lists come
  back as tuples (the configs' sequences are tuples). Apply command-line overrides to the
  result; `apply_saved_config` is the variant for when a config file is given too.
  """
  import ml_collections

  def convert(value):
    if isinstance(value, dict):
      return {k: convert(v) for k, v in value.items()}
    if isinstance(value, list):
      return _as_tuple(value)
    return value

  return ml_collections.ConfigDict(convert(saved))


def _as_tuple(value: list) -> tuple:
  return tuple(_as_tuple(v) if isinstance(v, list) else v for v in value)
