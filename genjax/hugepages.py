"""Transparent huge pages for glibc's malloc, so XLA:CPU's per-step buffers stop page-faulting.

Where the time went (measured, README benchmark section): XLA:CPU allocates a compiled
step's temporaries afresh for every execution, in one block (1.7 GB for the PixelCNN
peer step at batch 256), and the library kernels allocate their own scratch per call.
glibc's malloc serves blocks that large with a fresh `mmap`, so every step touches
hundreds of thousands of new 4 KiB pages; each costs a page fault and the kernel zeroing
the page: 408,000 faults per PixelCNN step. `glibc.malloc.hugetlb=1` (glibc >= 2.35)
makes malloc advise transparent huge pages (`madvise(MADV_HUGEPAGE)`) for what it maps,
so the kernel backs those blocks with 2 MiB pages: 37x fewer faults. Measured in
interleaved A/B runs on a shared 2-core CPU (README, benchmark section): the PixelCNN
peer step 1.12-1.27x faster, DCGAN-64 1.21x and 1.15x, RealNVP 1.03x and 1.10x, the DDPM
U-Net 1.43x in one round and 0.75x in a noisy one. Results are unchanged (it only
changes how memory is mapped; tested bit for bit).

glibc reads its tunables once, when the process starts, so the command-line entry
points (`genjax.cli.common.run`, hence every `genjax-*` command, `python -m
experiments.*` and the benchmarks) call `reexec()` first: it replaces the process with
itself (`os.execve`: same PID, same arguments, same standard streams) with
`GLIBC_TUNABLES` extended, before any JAX work. It does nothing where the setting cannot
help or is already made: not Linux, glibc older than 2.35, transparent huge pages
`never` (or `always`, which needs no advice), the user's `GLIBC_TUNABLES` already naming
`glibc.malloc.hugetlb` (a user's setting is never changed), `GENJAX_NO_HUGEPAGES=1`, or
an interactive interpreter. Child processes (the multi-process launcher's, the
benchmarks') go through the same entry points, so each re-executes itself; `environ()`
is the environment `reexec` uses.
"""

from __future__ import annotations

import os
import platform
import sys

ENV = "GLIBC_TUNABLES"
TUNABLE = "glibc.malloc.hugetlb=1"
# Set to 1 to keep glibc's default malloc (the baseline of the README's measurements).
OFF = "GENJAX_NO_HUGEPAGES"
# Set in the re-executed process, so that it never re-executes again.
MARK = "GENJAX_HUGEPAGES_REEXEC"
THP = "/sys/kernel/mm/transparent_hugepage/enabled"


def _glibc_version() -> tuple[int, int] | None:
  lib, version = platform.libc_ver()
  if lib != "glibc" or not version:
    return None
  try:
    major, minor = (int(v) for v in version.split(".")[:2])
  except ValueError:
    return None
  return major, minor


def _thp_mode() -> str | None:
  """The kernel's transparent-huge-page mode (`always`, `madvise` or `never`), None if unknown."""
  try:
    with open(THP) as f:
      text = f.read()
  except OSError:
    return None
  start, end = text.find("["), text.find("]")
  return text[start + 1 : end] if 0 <= start < end else None


def decide(environ: dict | None = None) -> tuple[bool, str]:
  """Whether this process should run with `TUNABLE`, and why (one phrase)."""
  env = os.environ if environ is None else environ
  if env.get(OFF) == "1":
    return False, f"{OFF}=1"
  if "glibc.malloc.hugetlb" in env.get(ENV, ""):
    return False, f"{ENV} already sets glibc.malloc.hugetlb ({env[ENV]})"
  if not sys.platform.startswith("linux"):
    return False, f"not Linux ({sys.platform})"
  version = _glibc_version()
  if version is None or version < (2, 35):
    return False, f"needs glibc >= 2.35 (found {'none' if version is None else '.'.join(map(str, version))})"
  mode = _thp_mode()
  if mode != "madvise":
    why = "malloc's advice matters only under 'madvise'"
    return False, f"transparent huge pages are '{mode or 'unavailable'}' ({why})"
  return True, f"glibc {'.'.join(map(str, version))}, transparent huge pages on madvise"


def environ(env: dict | None = None) -> dict:
  """A copy of `env` (default: this process's) with `TUNABLE` added where `decide` says so."""
  env = dict(os.environ if env is None else env)
  if decide(env)[0]:
    env[ENV] = ":".join(filter(None, [env.get(ENV), TUNABLE]))
  return env


def describe(environ: dict | None = None) -> str:
  """This process's malloc setting in one phrase (the trainer's start-up line, benchmark records)."""
  env = os.environ if environ is None else environ
  if TUNABLE in env.get(ENV, "").split(":"):
    return f"malloc huge pages on ({ENV}={env[ENV]}{', set by genjax' if env.get(MARK) else ''})"
  return f"malloc huge pages off ({decide(env)[1]})"


def reexec() -> None:
  """Re-executes this process with `TUNABLE` in its environment when `decide` says so; else returns.

  Call it first thing in a command-line entry point, before JAX starts: the process is replaced
  (same PID and arguments), so nothing done before the call survives.
  """
  if os.environ.get(MARK) or sys.flags.interactive or hasattr(sys, "ps1"):
    return
  argv = list(getattr(sys, "orig_argv", []))
  if len(argv) < 2:  # a bare interpreter (a REPL): nothing to re-run
    return
  env = environ()
  if env.get(ENV) == os.environ.get(ENV):
    return
  env[MARK] = "1"
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execve(sys.executable, [sys.executable] + argv[1:], env)
  except OSError:  # cannot re-execute (e.g. no executable path): run on with glibc's defaults
    return
