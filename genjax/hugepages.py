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

The same re-execution preloads genjax's retaining allocator for large blocks
(`genjax/native/retain_alloc.c`, built at install time where a C compiler exists; `LD_PRELOAD`).
Huge pages make each fresh page cheaper; the allocator removes the fresh pages. glibc serves
every block of more than 32 MiB with a new `mmap` and returns it with `munmap`, and its mmap
threshold cannot be raised past 32 MiB, so XLA:CPU's per-step temporaries (2.3 GB for the
PixelCNN peer step) and Eigen's matmul packing buffers (61 MB, 15 per PixelCNN step) were
faulted in and zeroed by the kernel on every step: ~1,980 huge-page faults and 0.45-1.3 s of
kernel time per PixelCNN step (`page_faults_per_step`, `kernel_ms_per_step` in
`benchmarks.step_throughput`). The allocator keeps blocks of 1 MiB and more mapped after
`free` and reuses them for the next step's blocks (27 faults per step, measured), and hands
everything else to glibc. Memory kept mapped while free is capped (`GENJAX_RETAIN_MAX_MB`,
default a quarter of physical memory); past the cap it is returned to the kernel. It is
preloaded where it was built, on Linux, unless the user's `LD_PRELOAD` is set (a user's
setting is never changed) or `GENJAX_NO_RETAIN=1`. It changes where memory lives, never what
is computed (tested bit for bit); `retain_stats()` reports its use.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
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
PRELOAD = "LD_PRELOAD"
# Set to 1 to keep every block with glibc (no retaining allocator).
RETAIN_OFF = "GENJAX_NO_RETAIN"


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


def retain_library() -> str | None:
  """The retaining allocator's shared library, built at install time; None where none was built."""
  here = os.path.dirname(os.path.abspath(__file__))
  for suffix in importlib.machinery.EXTENSION_SUFFIXES:
    path = os.path.join(here, "_retain_alloc" + suffix)
    if os.path.isfile(path):
      return path
  return None


def decide_retain(environ: dict | None = None) -> tuple[bool, str]:
  """Whether this process should preload the retaining allocator, and why (one phrase)."""
  env = os.environ if environ is None else environ
  if env.get(RETAIN_OFF) == "1":
    return False, f"{RETAIN_OFF}=1"
  if not sys.platform.startswith("linux"):
    return False, f"not Linux ({sys.platform})"
  if _glibc_version() is None:
    return False, "needs glibc"
  lib = retain_library()
  if lib is None:
    return False, "not built (the install found no C compiler)"
  if env.get(PRELOAD):
    return False, f"{PRELOAD} already set ({env[PRELOAD]})"
  return True, f"built at {lib}"


def environ(env: dict | None = None) -> dict:
  """A copy of `env` (default: this process's) with `TUNABLE` added where `decide` says so and the
  retaining allocator preloaded where `decide_retain` says so."""
  env = dict(os.environ if env is None else env)
  if decide(env)[0]:
    env[ENV] = ":".join(filter(None, [env.get(ENV), TUNABLE]))
  if decide_retain(env)[0]:
    env[PRELOAD] = retain_library()
  return env


def retain_stats() -> dict | None:
  """The retaining allocator's use in this process (bytes), None where it is not loaded."""
  try:
    fn = ctypes.CDLL(None).genjax_retain_stats
  except (AttributeError, OSError):
    return None
  out = (ctypes.c_size_t * 5)()
  fn(out)
  keys = ("mapped", "live", "free_kept", "free_released", "live_blocks")
  return dict(zip(keys, (int(v) for v in out), strict=True))


def describe(environ: dict | None = None) -> str:
  """This process's malloc settings in one phrase (the trainer's start-up line, benchmark records)."""
  env = os.environ if environ is None else environ
  if TUNABLE in env.get(ENV, "").split(":"):
    pages = f"malloc huge pages on ({ENV}={env[ENV]}{', set by genjax' if env.get(MARK) else ''})"
  else:
    pages = f"malloc huge pages off ({decide(env)[1]})"
  lib = retain_library()
  if environ is None:  # this process: is the library loaded?
    loaded = retain_stats() is not None
  else:  # an environment: would a process started with it load the library?
    loaded = lib is not None and lib in env.get(PRELOAD, "").split(":")
  on, why = decide_retain(env)
  if loaded:
    retain = f"large blocks retained (genjax's allocator, {PRELOAD})"
  else:  # `on`: it would be preloaded, but this process did not start through an entry point
    retain = f"large blocks with glibc ({'not started through a genjax entry point' if on else why})"
  return f"{pages}; {retain}"


def reexec() -> None:
  """Re-executes this process with `environ()` (huge pages, the retaining allocator) where it differs
  from this process's environment; else returns.

  Call it first thing in a command-line entry point, before JAX starts: the process is replaced
  (same PID and arguments), so nothing done before the call survives.
  """
  if os.environ.get(MARK) or sys.flags.interactive or hasattr(sys, "ps1"):
    return
  argv = list(getattr(sys, "orig_argv", []))
  if len(argv) < 2:  # a bare interpreter (a REPL): nothing to re-run
    return
  env = environ()
  if env.get(ENV) == os.environ.get(ENV) and env.get(PRELOAD) == os.environ.get(PRELOAD):
    return
  env[MARK] = "1"
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execve(sys.executable, [sys.executable] + argv[1:], env)
  except OSError:  # cannot re-execute (e.g. no executable path): run on with glibc's defaults
    return
