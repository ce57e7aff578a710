"""Orbax checkpoints with one writer, any number of readers, checksums and fallback.

A checkpoint directory holds one subdirectory per complete checkpoint, named by its step:

    checkpoints/
      25/                  state/ (the TrainState, StandardSave), meta/ (JSON), manifest.json
      30/
      35.pending/          a save in progress (or one a kill interrupted): never read
      damaged/30-checksum  a checkpoint found damaged, moved aside by the writer (never deleted)
      .writer.lock         held by the one open `Checkpointer`

**Complete** means: a directory named by its step holding a valid `manifest.json` (format,
step, the checkpoint's meta, and the size and sha256 of every other file in it, plus a
digest of the manifest itself). A save writes into `N.pending` with Orbax, waits for Orbax
to finish, hashes and fsyncs every file, writes the manifest, and only then renames
`N.pending` to `N`: a directory named `N` is complete from the moment it exists, and
anything else (Orbax's `*.orbax-checkpoint-tmp*`, `N.pending`, a killed save) is invisible
to readers. Restoring verifies every file against the manifest first, so truncated or
flipped bytes are reported instead of loaded.

Two ways to open a directory:

- `Checkpointer(directory, keep, best_metric, best_mode, async_save)`, the **writer**
  (the trainer only): creates the directory, takes `.writer.lock`, removes leftovers of
  interrupted saves synchronously at start, saves asynchronously, refuses non-finite
  states, applies retention (the last `keep` complete checkpoints plus the best one by
  `best_metric`, read from each checkpoint's manifest, so a resumed run keeps what a
  straight run keeps), and moves damaged checkpoints to `damaged/`.
- `Checkpointer.reader(directory, best_metric, best_mode)` (a `CheckpointReader`):
  evaluate, sample, benchmarks, library code. Never creates, deletes, moves or writes
  anything; lists only complete checkpoints (one finished meanwhile appears on the next
  listing); skips damaged ones (with one log line) and leaves them in place.

Both: `all_steps()`, `latest_step()`, `best_step()`, `read_meta(step)`, `resolve(which)`,
`restore(target, step)` (exactly that step, verified) and `load(target, which)` ('latest',
'best' or a step, falling back to the previous complete checkpoint past damaged ones).

Several processes (`jax.distributed`): every process opens the same directory (a shared
filesystem) and makes the same calls; Orbax writes each process's shards, process 0 alone
does the rest (lock, manifest, rename, retention, moving damage aside) once every process's
files are complete, and decisions (which step to restore) and errors are shared, so all
processes see the same checkpoints and stop together (`Checkpointer`, `CheckpointReader.load`).

Manifests live in `genjax.train.manifest`; Orbax options, the quieting of Orbax's own
reports of a failed save and the triage of write errors in `genjax.train.checkpoint_io`.

Errors, each with a one-line message: `NoCheckpointError` (a FileNotFoundError: nothing
usable, says what exists), `CheckpointDamagedError` (an explicit step that is damaged),
`CheckpointMismatchError` (a verified checkpoint that does not fit the state built from
the config), `NonFiniteStateError` (save refused), `CheckpointWriteError` (an OSError: a
full disk or an unwritable directory, naming the space needed and free).
"""

from __future__ import annotations

import errno
import functools
import itertools
import json
import logging
import math
import os
import re
import shutil
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from genjax import distributed
from genjax.train import checkpoint_io as io
from genjax.train.manifest import fsync_dir, read_manifest, verify_files
from genjax.train.manifest import write_manifest as _write_manifest
from genjax.train.workdir import DirectoryLock

log = logging.getLogger("genjax")

DAMAGED_DIR = "damaged"
WRITER_LOCK = ".writer.lock"
PENDING = ".pending"
_STEP_NAME = re.compile(r"^\d+$")
_LEFTOVER_NAME = re.compile(r"^\d+\.")  # N.pending, N.pending.orbax-checkpoint-tmp, N.deleting-..., N.replaced-...


class CheckpointError(Exception):
  """Base of this module's errors; every message is one line."""


class NoCheckpointError(CheckpointError, FileNotFoundError):
  """No usable checkpoint for the request; the message says what exists."""


class _StepVanished(NoCheckpointError):
  """The step directory disappeared while being read (the writer's retention removed it)."""


class CheckpointDamagedError(CheckpointError, ValueError):
  """A checkpoint that fails verification: `.step`, `.reason` (a short tag), `.detail`."""

  def __init__(self, message: str, step: int, reason: str, detail: str):
    super().__init__(message)
    self.step, self.reason, self.detail = step, reason, detail


class CheckpointMismatchError(CheckpointError, ValueError):
  """A verified (intact) checkpoint that does not fit the target state, e.g. after a config change."""


class NonFiniteStateError(CheckpointError, FloatingPointError):
  """Save refused: the state holds NaN or inf. `.step`, `.leaves` (key paths), `.last_saved`."""

  def __init__(self, message: str, step: int, leaves: list[str], last_saved: int | None):
    super().__init__(message)
    self.step, self.leaves, self.last_saved = step, leaves, last_saved


class CheckpointWriteError(CheckpointError, OSError):
  """A save failed for lack of space or permission. `.errno`, `.step`, `.needed`, `.free`, `.last_saved`."""


# ------------------------------------------------------------------------- non-finite


def nonfinite_leaves(tree: Any) -> list[str]:
  """Key paths (`jax.tree_util.keystr`) of the floating-point leaves of `tree` holding NaN or inf.

  Integer, boolean and key leaves are skipped. One compiled program reduces every leaf
  (compiled once per state layout; separate eager reductions would compile one program per
  leaf shape) and one device-to-host transfer fetches the flags. In a multi-process run
  every process calls it on the same (replicated) state and gets the same answer.
  """
  paths, leaves = [], []
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if not hasattr(leaf, "dtype"):
      leaf = np.asarray(leaf)
    if not jnp.issubdtype(leaf.dtype, jnp.inexact):
      continue
    paths.append(jax.tree_util.keystr(path))
    leaves.append(leaf)
  if not leaves:
    return []
  finite = jax.device_get(_all_finite(leaves))
  return [p for p, ok in zip(paths, finite, strict=True) if not bool(ok)]


@jax.jit
def _all_finite(leaves: list) -> list:
  """bool[] per leaf: whether every element is finite."""
  return [jnp.isfinite(x).all() for x in leaves]


_SAVES = itertools.count()  # numbers every save of this process: unique barrier keys, alike on every process


def _read_lock_record(directory: str) -> dict | None:
  """The writer lock's record (pid, host, since, argv) as this process sees it, or None."""
  try:
    with open(os.path.join(directory, WRITER_LOCK)) as f:
      record = json.loads(f.read())
  except (OSError, ValueError):
    return None
  return record if isinstance(record, dict) else None


def _tree_nbytes(tree: Any) -> int:
  return int(sum(getattr(x, "nbytes", 0) or np.asarray(x).nbytes for x in jax.tree.leaves(tree)))


def _parse_which(which: str | int | None) -> str | int:
  if which is None or which == "latest":
    return "latest"
  if which == "best":
    return "best"
  if isinstance(which, (int, np.integer)) and not isinstance(which, bool) and which >= 0:
    return int(which)
  if isinstance(which, str) and which.isdigit():
    return int(which)
  raise ValueError(f"checkpoint must be 'latest', 'best' or a step number >= 0, got {which!r}")


def _error_to_json(error: BaseException) -> dict:
  """A checkpoint error as JSON, so the other processes of a run can raise the same one."""
  return {
    "class": type(error).__name__,
    "message": str(error),
    **{k: v for k in ("step", "reason", "detail") if isinstance(v := getattr(error, k, None), (int, str))},
  }


def _error_from_json(d: dict, what: str) -> BaseException:
  """The error process 0 raised (`_error_to_json`), rebuilt: same class and message."""
  cls, message = d["class"], d["message"]
  if cls == "CheckpointDamagedError":
    return CheckpointDamagedError(message, d["step"], d["reason"], d["detail"])
  simple = {c.__name__: c for c in (NoCheckpointError, _StepVanished, CheckpointMismatchError, CheckpointError)}
  if cls in simple:
    return simple[cls](message)
  return distributed.PeerError(f"process 0 failed {what}: {cls}: {message.splitlines()[0] if message else ''}")


# ------------------------------------------------------------------------- reading


class CheckpointReader:
  """Read-only access to a checkpoint directory: creates, deletes, moves and writes nothing.

  `best_metric` names the meta metric that ranks checkpoints for 'best' (e.g.
  'test/bits_per_dim'), `best_mode` is 'min' or 'max'.
  """

  writes = False

  def __init__(self, directory: str, best_metric: str | None = None, best_mode: str = "min"):
    if best_mode not in ("min", "max"):
      raise ValueError(f"checkpoint best mode must be 'min' or 'max', got {best_mode!r}")
    self.directory = os.path.abspath(directory)
    self.best_metric = best_metric
    self.best_mode = best_mode
    self._skipped: dict[tuple[int, int, int], tuple[str, str]] = {}  # (step, inode, mtime) -> (reason, detail)
    self._reported: set[tuple[int, str]] = set()
    self._restorer: ocp.Checkpointer | None = None
    self._metadata_reader: ocp.StandardCheckpointHandler | None = None
    self._primary = jax.process_index() == 0
    self._multi = jax.process_count() > 1

  # -- listing

  def _step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def _identity(self, step: int) -> tuple[int, int, int] | None:
    try:
      st = os.stat(self._step_dir(step))
    except OSError:
      return None
    return (step, st.st_ino, st.st_mtime_ns)

  def _scan(self) -> dict[int, dict]:
    """Complete steps -> their manifests, ascending; incomplete step directories are reported."""
    try:
      names = os.listdir(self.directory)
    except (FileNotFoundError, NotADirectoryError):
      return {}
    found = {}
    for name in names:
      if not _STEP_NAME.match(name):
        continue
      step, path = int(name), os.path.join(self.directory, name)
      if not os.path.isdir(path):
        continue
      manifest, reason, detail = read_manifest(path)
      if manifest is None:
        if reason != "vanished":
          self._damaged(step, reason, detail)
        continue
      if manifest["step"] != step:
        self._damaged(step, "bad-manifest", f"its manifest is for step {manifest['step']}")
        continue
      if self._identity(step) in self._skipped:
        continue
      found[step] = manifest
    return dict(sorted(found.items()))

  def all_steps(self) -> list[int]:
    """The complete checkpoints' steps, ascending (re-read from disk on every call)."""
    return list(self._scan())

  def latest_step(self) -> int | None:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def shared_steps(self) -> list[int]:
    """`all_steps()` as process 0 sees it, on every process (multi-process runs: a collective,
    called by every process at the same point; one process: `all_steps()`)."""
    return self._decide(self.all_steps, "listing checkpoints")

  def read_meta(self, step: int) -> dict:
    """The meta saved with `step` ({'step', 'data_position', 'metrics'}), from its manifest."""
    manifest, reason, detail = read_manifest(self._step_dir(step))
    if manifest is None:
      raise NoCheckpointError(
        f"no checkpoint at step {step} in {self.directory} ({detail}); available: {self.all_steps()}"
      )
    return dict(manifest["meta"])

  def best_step(self, manifests: dict[int, dict] | None = None) -> int | None:
    """The complete step whose saved metrics are best by `best_metric` (earliest on ties), or None."""
    if not self.best_metric:
      return None
    best, best_value = None, None
    for step, manifest in (self._scan() if manifests is None else manifests).items():
      value = (manifest["meta"].get("metrics") or {}).get(self.best_metric)
      if not isinstance(value, (int, float)) or not math.isfinite(value):
        continue
      if best is None or (value < best_value if self.best_mode == "min" else value > best_value):
        best, best_value = step, value
    return best

  def resolve(self, which: str | int | None = "latest") -> int:
    """'latest', 'best' or a step number -> an existing complete step, or NoCheckpointError saying what exists."""
    return self._resolve(_parse_which(which), ())

  def _resolve(self, which: str | int, rejected) -> int:
    manifests = {step: m for step, m in self._scan().items() if step not in rejected}
    steps = list(manifests)
    if not steps:
      raise NoCheckpointError(f"no checkpoint in {self.directory}; train first (experiments.train)")
    if which == "latest":
      return steps[-1]
    if which == "best":
      step = self.best_step(manifests)
      if step is None:
        raise NoCheckpointError(
          f"no checkpoint in {self.directory} carries eval metric {self.best_metric!r}; "
          f"available steps: {steps} (use --checkpoint=latest)"
        )
      return step
    if which not in manifests:
      problem = self._skipped.get(self._identity(which))
      if problem is not None:
        raise CheckpointDamagedError(
          f"checkpoint step {which} in {self.directory} is damaged ({problem[0]}: {problem[1]}); "
          f"complete checkpoints: {steps}",
          which,
          *problem,
        )
      path = self._step_dir(which)
      _, reason, detail = read_manifest(path) if os.path.isdir(path) else (None, "", "")
      why = f" (step {which} is not complete: {reason}: {detail})" if reason and reason != "vanished" else ""
      raise NoCheckpointError(f"no checkpoint at step {which} in {self.directory}{why}; available: {steps}")
    return which

  # -- restoring

  def verify(self, step: int) -> dict:
    """Checks every file of `step` against its manifest; returns the manifest.

    Raises CheckpointDamagedError, or NoCheckpointError if the step does not exist.
    """
    path = self._step_dir(step)
    if not os.path.isdir(path):
      raise _StepVanished(f"no checkpoint at step {step} in {self.directory}; available: {self.all_steps()}")
    manifest, reason, detail = read_manifest(path)
    if manifest is None and reason == "vanished":
      raise _StepVanished(f"checkpoint step {step} in {self.directory} disappeared while being read")
    if manifest is not None:
      problem = verify_files(path, manifest)
      if problem is None:
        return manifest
      reason, detail = problem
      if reason == "vanished":
        raise _StepVanished(f"checkpoint step {step} in {self.directory} disappeared while being read")
    raise CheckpointDamagedError(
      f"checkpoint step {step} in {self.directory} is damaged ({reason}: {detail})", step, reason, detail
    )

  def _problem(self, step: int) -> tuple[str, str] | None:
    """`verify(step)` as `(reason, detail)` ('vanished' for a step that is gone), or None."""
    try:
      self.verify(step)
    except _StepVanished as e:
      return "vanished", str(e)
    except CheckpointDamagedError as e:
      return e.reason, e.detail
    return None

  def _problem_anywhere(self, step: int) -> tuple[str, str] | None:
    """`_problem(step)` of the first process that finds one, the same on every process.

    Multi-process runs: every process verifies the files it will read (a collective).
    """
    problem = self._problem(step)
    if not self._multi:
      return problem
    found = distributed.gather_json(problem, what=f"verifying checkpoint step {step}")
    for i, p in enumerate(found):
      if p is not None:
        return p[0], p[1] if i == 0 else f"{p[1]} (as process {i} sees it)"
    return None

  def _decide(self, fn, what: str):
    """`fn()` on process 0, its result (or the checkpoint error it raised) on every process.

    Multi-process runs decide what to read once, so every process restores the same step
    even while a trainer adds and removes checkpoints (a collective). One process: `fn()`.
    """
    if not self._multi:
      return fn()
    outcome, error = None, None
    if self._primary:
      try:
        outcome = {"value": fn()}
      except Exception as e:  # noqa: BLE001 - shared with the others, then raised here
        error, outcome = e, {"error": _error_to_json(e)}
    outcome = distributed.broadcast_json(outcome, what=what)
    if error is not None:
      raise error
    if "error" in outcome:
      raise _error_from_json(outcome["error"], what)
    return outcome["value"]

  def restore(self, target: Any, step: int) -> tuple[Any, dict]:
    """The state and meta of exactly `step`, verified, onto the structure and shardings of `target`.

    Raises CheckpointDamagedError (verification failed), CheckpointMismatchError (intact
    but shaped differently from `target`) or NoCheckpointError (no such step). In a
    multi-process run every process calls it (Orbax reads each process's shards) and every
    process verifies; a problem any process finds stops all of them alike.
    """
    problem = self._problem_anywhere(step)
    if problem is not None:
      reason, detail = problem
      if reason == "vanished":
        raise _StepVanished(f"no checkpoint at step {step} in {self.directory}; available: {self.all_steps()}")
      raise CheckpointDamagedError(
        f"checkpoint step {step} in {self.directory} is damaged ({reason}: {detail})", step, reason, detail
      )
    return self._read(target, step)

  def _read(self, target: Any, step: int) -> tuple[Any, dict]:
    """Orbax's restore of a verified `step` onto `target` (every process of a multi-process run)."""
    path = self._step_dir(step)
    self._check_fits(step, target)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    if self._restorer is None:
      self._restorer = ocp.Checkpointer(io.composite_handler())
    try:
      restored = self._restorer.restore(
        path, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
      )
    except Exception as e:
      if not os.path.isdir(path):
        raise _StepVanished(f"checkpoint step {step} in {self.directory} disappeared while being read") from e
      first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
      raise CheckpointMismatchError(
        f"checkpoint step {step} in {self.directory} is intact but does not fit the state built from this "
        f"config ({type(e).__name__}: {first}); was it trained with another config?"
      ) from e
    return restored["state"], dict(restored["meta"])

  def _check_fits(self, step: int, target: Any) -> None:
    """CheckpointMismatchError naming the leaves whose shape or dtype differ from `target`'s.

    Reads only the saved metadata, so a checkpoint of another config is refused before
    Orbax starts reading arrays into the wrong shapes.
    """
    try:
      if self._metadata_reader is None:
        self._metadata_reader = ocp.StandardCheckpointHandler()
      tree = self._metadata_reader.metadata(epath.Path(self._step_dir(step)) / "state").tree
      saved = {k: v for k, v in ocp.tree.to_flat_dict(tree, sep=".").items() if v is not None}
      wanted = {
        k: v for k, v in ocp.tree.to_flat_dict(ocp.tree.serialize_tree(target), sep=".").items() if v is not None
      }
    except Exception as e:  # noqa: BLE001 - leave the verdict to the restore itself
      log.debug("could not compare checkpoint step %d with the target's structure: %s", step, e)
      return

    def show(x):
      return f"{tuple(getattr(x, 'shape', ()))} {np.dtype(getattr(x, 'dtype', None) or np.asarray(x).dtype)}"

    problems = [f"{k} is missing from the checkpoint" for k in sorted(wanted.keys() - saved.keys())]
    problems += [f"the checkpoint has {k}, this state does not" for k in sorted(saved.keys() - wanted.keys())]
    problems += [
      f"{k} is {show(saved[k])} in the checkpoint, {show(wanted[k])} here"
      for k in sorted(wanted.keys() & saved.keys())
      if show(saved[k]) != show(wanted[k])
    ]
    if problems:
      more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
      raise CheckpointMismatchError(
        f"checkpoint step {step} in {self.directory} is intact but does not fit the state built from this "
        f"config: {'; '.join(problems[:3])}{more}; was it trained with another config?"
      )

  def load(self, target: Any, which: str | int | None = "latest") -> tuple[Any, dict]:
    """Restores 'latest', 'best' or a step, passing over damaged checkpoints.

    A damaged checkpoint is reported in one log line and set aside (the writer moves it
    to `damaged/`, a reader skips it), and the next one is tried: the previous complete
    checkpoint for 'latest', the next best for 'best'. An explicit step that is damaged
    raises CheckpointDamagedError naming the problem and the complete steps. Returns
    `(state, meta)`; `meta['step']` is the step restored. Raises NoCheckpointError when
    nothing usable is left, CheckpointMismatchError when an intact checkpoint does not
    fit `target` (no fallback: every checkpoint of the run would fail the same way).

    Multi-process runs: every process calls it; process 0 chooses the step, every process
    verifies it, and all restore the same step or raise the same error.
    """
    which = _parse_which(which)
    explicit = isinstance(which, int)
    rejected: set[int] = set()
    while True:
      step = self._decide(lambda: self._resolve(which, rejected), f"choosing checkpoint {which!r} to restore")
      problem = self._problem_anywhere(step)
      if problem is None:
        return self._read(target, step)
      rejected.add(step)
      reason, detail = problem
      if reason == "vanished":
        if explicit:
          self._decide(functools.partial(self._raise_vanished, step), f"restoring checkpoint step {step}")
        continue
      self._damaged(step, reason, detail, quiet=explicit)
      if explicit:
        self._decide(
          functools.partial(self._raise_damaged, step, reason, detail), f"restoring checkpoint step {step}"
        )

  def _raise_vanished(self, step: int):
    raise NoCheckpointError(
      f"checkpoint step {step} in {self.directory} was removed by the trainer's retention while being "
      f"read; available: {self.all_steps()}"
    )

  def _raise_damaged(self, step: int, reason: str, detail: str):
    raise CheckpointDamagedError(
      f"checkpoint step {step} in {self.directory} is damaged ({reason}: {detail}); complete checkpoints: "
      f"{self.all_steps()}",
      step,
      reason,
      detail,
    )

  def _damaged(self, step: int, reason: str, detail: str, quiet: bool = False) -> None:
    identity = self._identity(step)
    if identity is not None and reason not in ("empty", "no-manifest", "bad-manifest"):
      self._skipped[identity] = (reason, detail)  # the others are re-detected by every listing
    if not quiet and (step, reason) not in self._reported and (self._primary or not self._multi):
      self._reported.add((step, reason))
      log.warning(
        "checkpoint step %d in %s is damaged (%s: %s); skipped and left in place",
        step,
        self.directory,
        reason,
        detail,
      )

  def close(self) -> None:
    for orbax_object in (self._restorer, self._metadata_reader):
      if orbax_object is not None:
        orbax_object.close()
    self._restorer = self._metadata_reader = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


# ------------------------------------------------------------------------- writing


class Checkpointer(CheckpointReader):
  """The writer of a checkpoint directory: one per directory (`.writer.lock`), the trainer only.

  At start it creates the directory, takes the lock (WorkdirBusyError if another writer
  holds it), removes leftovers of interrupted saves and moves incomplete step
  directories to `damaged/`, all synchronously. `async_save` writes in the background;
  errors of a background save surface at the next `save`, `wait` or `close`.
  Raises CheckpointWriteError if the directory cannot be created or written.

  Multi-process runs (after `jax.distributed.initialize`): every process opens the
  writer and calls `save`, `wait` and `close` at the same points (each writes its
  shards of the state through Orbax). Process 0 alone takes the lock, removes
  leftovers, moves damaged checkpoints aside, hashes the files into the manifest,
  renames `N.pending` to `N` and applies retention; it does so once every process's
  files are complete (Orbax's barrier), and every process waits for that commit
  (a barrier of JAX's coordination service, bounded by `GENJAX_CHECKPOINT_TIMEOUT`)
  before its save counts as finished. An error on any process (process 0 cannot open
  the directory, a save failed somewhere) is raised on every process at the same call
  (`distributed.agree`): the failing one raises its own error, the others a
  `distributed.PeerError` quoting it. The directory must be one every process sees
  (a shared filesystem): the others check that they see process 0's lock.
  """

  writes = True

  def __init__(
    self,
    directory: str,
    keep: int = 3,
    best_metric: str | None = None,
    best_mode: str = "min",
    async_save: bool = True,
  ):
    super().__init__(directory, best_metric, best_mode)
    if not isinstance(keep, int) or keep < 1:
      raise ValueError(f"checkpoint.keep must be an integer >= 1, got {keep!r}")
    self.keep = keep
    self.async_save = async_save
    self.damaged_dir = os.path.join(self.directory, DAMAGED_DIR)
    self._guard = threading.RLock()  # listing and moving, between the caller and the save thread
    self._thread: threading.Thread | None = None
    self._error: BaseException | None = None
    self._saving: int | None = None  # the step of the save in flight
    self._closed = False
    self._lock: DirectoryLock | None = None
    self._timeout = io.checkpoint_timeout()
    error = None
    if self._primary:
      try:
        self._open()
      except Exception as e:  # noqa: BLE001 - raised below, on every process
        error = e
    what = f"opening checkpoint directory {self.directory}"
    distributed.agree(error, what)  # one process: raises `error`, if any
    if self._multi:
      lock_record = self._decide(lambda: _read_lock_record(self.directory), what)
      try:
        self._check_shared(lock_record)
      except CheckpointError as e:
        error = e
      try:
        distributed.agree(error, what)
      except BaseException:
        if self._lock is not None:
          self._lock.release()
        raise
    self._ckptr = ocp.AsyncCheckpointer(io.composite_handler(), async_options=io.orbax_options())
    io.quiet_orbax(+1)

  def _open(self) -> None:
    """Process 0: creates the directory, takes the lock, removes leftovers, moves damage aside."""
    if os.path.exists(self.directory) and not os.path.isdir(self.directory):
      raise ValueError(f"checkpoint directory {self.directory} is a file; expected a directory")
    try:
      os.makedirs(self.directory, exist_ok=True)
      if not os.access(self.directory, os.W_OK | os.X_OK):  # fail now, not at the first save
        code = errno.EROFS if os.statvfs(self.directory).f_flag & os.ST_RDONLY else errno.EACCES
        raise OSError(code, os.strerror(code), self.directory)
      self._lock = DirectoryLock(os.path.join(self.directory, WRITER_LOCK), "checkpoint directory").acquire()
      self._remove_leftovers()
      self._scan()  # moves incomplete step directories aside
    except OSError as e:
      if self._lock is not None:
        self._lock.release()
      error = CheckpointWriteError(f"cannot write to checkpoint directory {self.directory}: {e.strerror or e}")
      error.errno = e.errno
      raise error from None

  def _check_shared(self, lock_record: dict | None) -> None:
    """Processes other than 0: CheckpointError unless they see the lock process 0 just took."""
    if self._primary:
      return
    mine = _read_lock_record(self.directory)
    if lock_record is None or mine != lock_record:
      raise CheckpointError(
        f"process {jax.process_index()} does not see the checkpoint directory {self.directory} that process 0 "
        f"opened (its lock file {WRITER_LOCK} differs or is missing there): every process must see the workdir "
        f"on one shared filesystem (NFS, Lustre, GCS FUSE, ...)"
      )

  @classmethod
  def reader(cls, directory: str, best_metric: str | None = None, best_mode: str = "min") -> CheckpointReader:
    """A read-only `CheckpointReader` of `directory` (for everything but the trainer)."""
    return CheckpointReader(directory, best_metric, best_mode)

  # -- maintenance (primary process only)

  def _remove_leftovers(self) -> None:
    """Removes `N.<suffix>` directories: saves a kill or failure interrupted, half-finished deletions."""
    for name in sorted(os.listdir(self.directory)):
      if _LEFTOVER_NAME.match(name):
        log.info("removing %s in %s, left by an interrupted save", name, self.directory)
        shutil.rmtree(os.path.join(self.directory, name))

  def _scan(self) -> dict[int, dict]:
    with self._guard:
      return super()._scan()

  def _damaged(self, step: int, reason: str, detail: str, quiet: bool = False) -> None:
    if not self._primary:
      return super()._damaged(step, reason, detail, quiet=True)
    with self._guard:
      src = self._step_dir(step)
      if not os.path.isdir(src):
        return
      dst = os.path.join(self.damaged_dir, f"{step}-{reason}")
      n = 1
      while os.path.exists(dst):
        n += 1
        dst = os.path.join(self.damaged_dir, f"{step}-{reason}-{n}")
      try:
        os.makedirs(self.damaged_dir, exist_ok=True)
        os.rename(src, dst)
      except OSError as e:
        log.warning(
          "checkpoint step %d in %s is damaged (%s: %s); could not move it aside (%s), skipping it",
          step,
          self.directory,
          reason,
          detail,
          e.strerror or e,
        )
        return super()._damaged(step, reason, detail, quiet=True)
    if not quiet:
      log.warning(
        "checkpoint step %d in %s is damaged (%s: %s); moved to %s", step, self.directory, reason, detail, dst
      )

  def _remove_step(self, step: int) -> None:
    src = self._step_dir(step)
    doomed = f"{src}.deleting-{time.time_ns()}"
    try:
      os.rename(src, doomed)  # atomic: readers stop seeing it here
      shutil.rmtree(doomed)
    except OSError as e:
      log.warning("could not remove old checkpoint step %d in %s: %s", step, self.directory, e.strerror or e)

  def _apply_retention(self) -> None:
    """Keeps the last `keep` complete checkpoints and the best one by the metrics in their manifests."""
    with self._guard:
      manifests = self._scan()
      keep = set(list(manifests)[-self.keep :])
      best = self.best_step(manifests)
      if best is not None:
        keep.add(best)
      for step in manifests:
        if step not in keep:
          self._remove_step(step)

  # -- saving

  def save(self, state: Any, data_position: int, metrics: dict[str, float] | None = None) -> int:
    """Starts saving `state` at its step with its data position and eval metrics; returns the step.

    Waits for the previous save first (raising its error, if any). Raises
    NonFiniteStateError (nothing written) if any floating-point leaf of `state` holds NaN
    or inf, CheckpointWriteError for a full disk or an unwritable directory. The
    checkpoint becomes visible (complete) once written, hashed and renamed into place;
    retention runs after that.
    """
    if self._closed:
      raise ValueError(f"save() on a closed Checkpointer of {self.directory}")
    self._join(agree=True)
    step = int(jax.device_get(state.step))
    bad = nonfinite_leaves(state)
    if bad:
      last = self.latest_step()
      shown = ", ".join(bad[:6]) + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")
      kept = (
        f"the last good checkpoint, step {last}, is kept in {self.directory}"
        if last is not None
        else f"no checkpoint was saved before it in {self.directory}"
      )
      raise NonFiniteStateError(
        f"refusing to save step {step}: {len(bad)} leaves hold NaN or inf ({shown}); {kept}. "
        f"Lower optim.learning_rate or set optim.grad_clip.",
        step,
        bad,
        last,
      )
    meta = {
      "step": step,
      "data_position": int(data_position),
      "metrics": {str(k): float(v) for k, v in metrics.items()} if metrics else None,
    }
    nbytes = _tree_nbytes(state)
    pending = self._step_dir(step) + PENDING
    try:
      if self._primary:
        for leftover in (pending, pending + ".orbax-checkpoint-tmp"):
          if os.path.exists(leftover):
            shutil.rmtree(leftover)
      self._ckptr.save(
        pending,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        force=True,
      )
    except Exception as e:
      # Raised here only: the other processes may be inside Orbax's own collectives, where a
      # collective of ours would not match theirs. This process then stops (fail-fast), and
      # theirs fail within a second ("Connection closed by peer").
      error = self._write_error(e, step, nbytes)
      if error is None:
        raise
      raise error from e
    self._saving = step
    barrier_key = f"genjax_checkpoint_commit_{next(_SAVES)}_{step}"
    if self.async_save:
      self._thread = threading.Thread(
        target=self._finish, args=(step, pending, meta, nbytes, barrier_key), name=f"genjax-checkpoint-{step}"
      )
      self._thread.start()
    else:
      self._finish(step, pending, meta, nbytes, barrier_key)
      self._join(agree=True)
    return step

  def _finish(self, step: int, pending: str, meta: dict, nbytes: int, barrier_key: str) -> None:
    """Waits for Orbax (every process's files), then process 0 writes the manifest, renames
    `N.pending` to `N` and applies retention; every process then waits for the others (multi-process
    runs). The error, if any, is kept for `_join`."""
    error = None
    try:
      self._ckptr.wait_until_finished()
      if self._primary:
        _write_manifest(pending, step, meta)
        with self._guard:
          final = self._step_dir(step)
          if os.path.exists(final):  # the same step saved again: replace it
            replaced = f"{final}.replaced-{time.time_ns()}"
            os.rename(final, replaced)
            shutil.rmtree(replaced, ignore_errors=True)
          os.rename(pending, final)
          fsync_dir(self.directory)
          self._apply_retention()
    except BaseException as e:  # noqa: BLE001 - kept for the caller's thread
      error = self._write_error(e, step, nbytes)
      if error is not None:
        error.__cause__ = e
      else:
        error = e
    if self._multi:  # every process arrives, also after a failure, so none waits for the timeout
      try:
        io.barrier(barrier_key, self._timeout)
      except Exception as e:  # noqa: BLE001
        if error is None:
          error = CheckpointError(
            f"checkpoint step {step} in {self.directory}: not every process finished saving within "
            f"{self._timeout} s ({distributed.one_line(e)}; GENJAX_CHECKPOINT_TIMEOUT sets the limit)"
          )
    self._error = error

  def _join(self, agree: bool) -> None:
    """Waits for the save in flight; raises its error. With `agree` (multi-process runs, every
    process at the same call) an error on any process is raised on every process."""
    thread, self._thread = self._thread, None
    if thread is not None:
      thread.join()
    error, self._error = self._error, None
    step, self._saving = self._saving, None
    if agree:
      if step is not None or error is not None:
        distributed.agree(error, f"saving checkpoint step {step}")
    elif error is not None:
      raise error

  def _write_error(self, exc: BaseException, step: int, nbytes: int) -> CheckpointWriteError | None:
    code = io.write_errno(exc)
    if code is None:
      return None
    free = io.free_bytes(self.directory)
    try:
      last = self.latest_step()
    except OSError:
      last = None
    intact = (
      f"the last complete checkpoint (step {last}) is intact"
      if last is not None
      else "no complete checkpoint was saved before"
    )
    error = CheckpointWriteError(
      f"cannot write checkpoint step {step} to {self.directory}: {os.strerror(code)}; it needs about "
      f"{io.format_size(nbytes)}, {io.format_size(free)} free there; {intact}"
    )
    error.errno, error.step, error.needed, error.free, error.last_saved = code, step, nbytes, free, last
    return error

  def wait(self) -> None:
    """Blocks until the last save is complete (visible to every process); raises its error, if any."""
    self._join(agree=True)

  def close(self) -> None:
    """Finishes the last save (raising its error, if any), then releases the directory.

    Always releases Orbax's resources and the lock, and removes what a failed save left
    behind; calling it again does nothing. Multi-process runs: every process calls it.
    """
    self._close(agree=True)

  def _close(self, agree: bool) -> None:
    """`close()`; `agree=False` (an exception in flight, maybe on this process only) makes no
    collective call and leaves leftovers of other processes' saves to the next start."""
    if self._closed:
      return
    self._closed = True
    try:
      self._join(agree=agree)
    finally:
      try:
        self._ckptr.close()
      except Exception as e:  # noqa: BLE001 - its error, if any, was raised by _join already
        log.debug("closing the Orbax checkpointer of %s: %s", self.directory, e)
      super().close()
      if self._primary and (agree or not self._multi):
        try:
          self._remove_leftovers()
        except OSError:
          pass
      io.quiet_orbax(-1)
      if self._lock is not None:
        self._lock.release()

  def __exit__(self, exc_type, exc, tb):
    if exc_type is None:
      self.close()
      return
    try:
      self._close(agree=False)
    except Exception as e:  # noqa: BLE001 - do not mask the exception in flight
      log.warning("while closing checkpoints in %s: %s", self.directory, e)
