"""Test-only: records what a process writes under a directory (put this folder on PYTHONPATH).

With GENJAX_AUDIT_ROOT=<dir> and GENJAX_AUDIT_LOG=<prefix> set, every Python process that
starts installs an audit hook (`sys.addaudithook`) that appends one line per write-like
event on a path under <dir> to `<prefix>.<GENJAX_PROCESS_ID or 'main'>.<pid>`:

  open <path>        opened for writing (builtins.open / os.open with a write mode or flag)
  rename <dst>       os.rename / os.replace onto <path>
  mkdir|remove|rmdir|rmtree <path>

tests/test_multiprocess.py uses it to show that only process 0 writes the run's files.
File writes done in C++ (tensorstore's array data inside an Orbax checkpoint) are not seen.
"""

import os
import sys

_ROOT = os.environ.get("GENJAX_AUDIT_ROOT")
_LOG = os.environ.get("GENJAX_AUDIT_LOG")

if _ROOT and _LOG:
  _roots = tuple({os.path.abspath(_ROOT) + os.sep, os.path.realpath(_ROOT) + os.sep})
  _out = open(f"{_LOG}.{os.environ.get('GENJAX_PROCESS_ID', 'main')}.{os.getpid()}", "a", buffering=1)  # noqa: SIM115
  _WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

  def _under(path) -> str | None:
    if isinstance(path, bytes):
      path = os.fsdecode(path)
    if not isinstance(path, (str, os.PathLike)):
      return None
    path = os.path.abspath(os.fspath(path))
    for root in _roots:
      if path.startswith(root):
        return path[len(root) :]
    return None

  def _hook(event: str, args: tuple) -> None:
    if event == "open":
      path, mode, flags = (tuple(args) + (None, None, None))[:3]
      writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
        isinstance(flags, int) and bool(flags & _WRITE_FLAGS)
      )
      kind, target = ("open", path) if writing else (None, None)
    elif event in ("os.rename", "os.replace"):
      kind, target = "rename", args[1]
    elif event in ("os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree"):
      kind, target = event.split(".")[-1], args[0]
    else:
      return
    if kind is None:
      return
    rel = _under(target)
    if rel is not None:
      _out.write(f"{kind} {rel}\n")

  sys.addaudithook(_hook)
