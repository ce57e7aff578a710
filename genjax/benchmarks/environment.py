"""What a benchmark ran with: XLA flags (the user's and genjax's choice), jax/jaxlib versions, CPU."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
  """The CPU's model name (from /proc/cpuinfo on Linux, else `platform.processor()`)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def describe() -> dict:
  """A dict for benchmark records: `xla_flags` (the process's XLA_FLAGS), `xla_flags_source`
  ('user', 'genjax' or 'none'), `xla_flags_reason` (genjax's rule, if it chose them), `malloc`
  (whether malloc uses transparent huge pages, `genjax.hugepages`), `fused_kernels` (whether
  genjax's CPU kernels are loaded, `genjax.nn.native`), `jax`,
  `jaxlib`, `cpu`, `cpu_count` (usable cores), `python` and `load_average_1min`."""
  import jax
  import jaxlib

  from genjax import hugepages, xla_flags
  from genjax.nn import native

  info = xla_flags.current()
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    cores = os.cpu_count()
  return {
    "xla_flags": info["flags"],
    "xla_flags_source": info["source"],
    "xla_flags_reason": info["reason"],
    "malloc": hugepages.describe(),  # glibc's huge-page tunable (genjax.hugepages)
    "fused_kernels": native.status(),
    "jax": jax.__version__,
    "jaxlib": jaxlib.__version__,
    "cpu": cpu_model(),
    "cpu_count": cores,
    "python": platform.python_version(),
    # Other processes compete for the cores: timings taken under load are slower and noisier.
    "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
  }
