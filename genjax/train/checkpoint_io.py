"""Orbax plumbing for `genjax.train.checkpoint`: save options, quiet failures, write-error triage.

- `orbax_options()` / `composite_handler()`: Orbax objects that create a save's directories
  inside `save()` itself, so an unwritable directory fails there at once.
- `quiet_orbax(+1 / -1)`: while a writer is open, drops Orbax's own duplicate reports of a
  failed background save (ERROR log records with tracebacks; asyncio's late 'Event loop is
  closed'); the writer reports the failure once, as one exception.
- `write_errno(exc)`: the errno of a full disk or a permission failure anywhere in an
  exception chain, including tensorstore's `[os_error_code='28']` messages.
- `free_bytes(path)`, `format_size(n)`: for the one-line message.
- `checkpoint_timeout()`: how long a multi-process save may wait for the other processes
  (`GENJAX_CHECKPOINT_TIMEOUT` seconds, default 1200, Orbax's own default), and
  `barrier(key, seconds)`: a barrier of every process through JAX's coordination service,
  safe from a background thread (Orbax's `multihost.get_barrier_sync_fn`).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import sys
import threading
from typing import Any

import orbax.checkpoint as ocp

log = logging.getLogger("genjax")

WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)
_WRITE_ERROR_TEXT = {
  "No space left on device": errno.ENOSPC,
  "Disk quota exceeded": errno.EDQUOT,
  "Read-only file system": errno.EROFS,
  "Permission denied": errno.EACCES,
}


ENV_CHECKPOINT_TIMEOUT = "GENJAX_CHECKPOINT_TIMEOUT"
DEFAULT_CHECKPOINT_TIMEOUT = 1200


def checkpoint_timeout(environ: dict | None = None) -> int:
  """Seconds a save may take from its start until every process has written its part and the
  checkpoint is committed: `GENJAX_CHECKPOINT_TIMEOUT`, default 1200. Raises ValueError naming
  the variable for a value that is not a positive integer."""
  raw = (os.environ if environ is None else environ).get(ENV_CHECKPOINT_TIMEOUT, "")
  if raw == "":
    return DEFAULT_CHECKPOINT_TIMEOUT
  if not raw.isdigit() or int(raw) < 1:
    raise ValueError(f"{ENV_CHECKPOINT_TIMEOUT}={raw!r} is not an integer >= 1 (seconds)")
  return int(raw)


def barrier(key: str, seconds: float) -> None:
  """Waits until every process has reached the barrier `key` (unique per use), at most `seconds`.

  Through JAX's coordination service, not a device collective, so it may run in a save's
  background thread while the main thread trains. Does nothing with one process. Raises
  whatever the coordination service raises on a timeout (DEADLINE_EXCEEDED).
  """
  from orbax.checkpoint import multihost

  multihost.get_barrier_sync_fn()(key=key, timeout_ms=max(int(seconds * 1000), 1))


def orbax_options() -> ocp.AsyncOptions:
  """Directories created inside save(): an unwritable directory fails there, not in a waiting thread."""
  return ocp.AsyncOptions(create_directories_asynchronously=False, timeout_secs=checkpoint_timeout())


def composite_handler() -> ocp.CompositeCheckpointHandler:
  return ocp.CompositeCheckpointHandler(composite_options=ocp.CompositeOptions(async_options=orbax_options()))


class _OrbaxBackgroundErrors(logging.Filter):
  """Drops Orbax's ERROR log records (with tracebacks) about failed background saves.

  The writer re-raises every such error itself, as one exception with a one-line message;
  installed only while a writer is open.
  """

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno < logging.ERROR or "orbax" not in record.pathname:
      return True
    message = record.getMessage()
    return not ("raised an exception" in message or "Handler Commit operations" in message)


def _closed_loop_hook(unraisable: Any) -> None:
  """Drops the 'Event loop is closed' RuntimeError that Orbax's late callbacks raise after a failed save."""
  exc = unraisable.exc_value
  if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
    log.debug("ignored a late Orbax callback after a failed save: %r", exc)
    return
  _previous_hook(unraisable)


_filter = _OrbaxBackgroundErrors()
_filter_users = 0
_filter_guard = threading.Lock()
_previous_hook = sys.unraisablehook


def quiet_orbax(delta: int) -> None:
  """Counts open writers; while there is one, Orbax's noise about a failed background save is dropped.

  A failed save is reported once, by the writer, as one exception. Orbax also logs the
  failure with tracebacks and, when other writes of the failed save finish later, makes
  asyncio print 'Exception ignored ... RuntimeError: Event loop is closed'.
  """
  global _filter_users, _previous_hook
  with _filter_guard:
    _filter_users += delta
    absl_logger = logging.getLogger("absl")
    if delta > 0 and _filter_users == 1:
      absl_logger.addFilter(_filter)
      _previous_hook = sys.unraisablehook
      sys.unraisablehook = _closed_loop_hook
    elif _filter_users <= 0:
      _filter_users = 0
      absl_logger.removeFilter(_filter)
      if sys.unraisablehook is _closed_loop_hook:
        sys.unraisablehook = _previous_hook


def write_errno(exc: BaseException) -> int | None:
  """The errno of a space or permission failure anywhere in `exc`'s chain, else None."""
  seen, todo = set(), [exc]
  while todo:
    e = todo.pop()
    if e is None or id(e) in seen:
      continue
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:
      return e.errno
    text = str(e)
    for pattern in (r"os_error_code='(\d+)'", r"\[Errno (\d+)\]"):
      for code in re.findall(pattern, text):
        if int(code) in WRITE_ERRNOS:
          return int(code)
    for phrase, code in _WRITE_ERROR_TEXT.items():
      if phrase in text:
        return code
    todo.extend([e.__cause__, e.__context__, *getattr(e, "exceptions", ())])
  return None


def free_bytes(path: str) -> int | None:
  while path and not os.path.exists(path):
    path = os.path.dirname(path)
  try:
    return shutil.disk_usage(path or "/").free
  except OSError:
    return None


def format_size(n: int | None) -> str:
  if n is None:
    return "an unknown amount"
  for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
    if n >= scale:
      return f"{n / scale:.1f} {unit} ({n} bytes)"
  return f"{n} bytes"
