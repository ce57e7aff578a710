"""genjax's native CPU kernels: one shared library of XLA FFI custom calls, loaded once.

`genjax/native/*.cc`, built by `pip install` (setup.py) into `genjax._kernels` against the
XLA FFI headers of the jaxlib in the build environment:

* `coupling_net.cc`: RealNVP's coupling nets as one fused kernel (`genjax.nn.coupling_net`);
* `conv_wgrad.cc`: the weight gradient of narrow convolutions and of dense layers over
  pixels (`genjax.nn.conv_grads`).

`status()` says 'loaded', or why not: not built (no C++ compiler or jaxlib headers at
install time), a CPU without AVX2 and FMA, a different jaxlib at run time than at build
time, or `GENJAX_NO_FUSED_KERNELS=1` (read once, at first use). Where they are not loaded,
every caller runs the same computation as XLA ops; on other backends too.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.machinery
import os

import jax
import jax.numpy as jnp
import jaxlib.version

# The FFI targets, by the handler symbols that implement them.
TARGETS = {
  "genjax_coupling_net_fwd": "GenjaxCouplingNetFwd",
  "genjax_coupling_net_bwd": "GenjaxCouplingNetBwd",
  "genjax_conv_wgrad": "GenjaxConvWGrad",
}


def _library_path() -> str | None:
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for suffix in importlib.machinery.EXTENSION_SUFFIXES:
    path = os.path.join(here, "_kernels" + suffix)
    if os.path.exists(path):
      return path
  return None


def cpu_has_avx2_fma() -> bool:
  try:
    with open("/proc/cpuinfo") as f:
      flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
  except OSError:
    return False
  return "avx2" in flags and "fma" in flags


@functools.cache
def status() -> str:
  """'loaded' (every target registered for the CPU backend), or why the kernels are not used."""
  if os.environ.get("GENJAX_NO_FUSED_KERNELS", "") not in ("", "0"):
    return "off (GENJAX_NO_FUSED_KERNELS)"
  path = _library_path()
  if path is None:
    return "not built (no C++ compiler or jaxlib headers at install time)"
  if not cpu_has_avx2_fma():
    return "needs a CPU with AVX2 and FMA"
  lib = ctypes.cdll.LoadLibrary(path)
  lib.GenjaxKernelsJaxlibVersion.restype = ctypes.c_char_p
  built = lib.GenjaxKernelsJaxlibVersion().decode()
  if built != jaxlib.version.__version__:
    return f"built against jaxlib {built}, running {jaxlib.version.__version__} (reinstall genjax to rebuild it)"
  for target, symbol in TARGETS.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
  return "loaded"


def batched_by(reference, multiple: bool = False):
  """A `vmap` rule for a kernel's primitive: map its XLA form `reference(*args, **params)` over the
  batched operands (moved to axis 0). `multiple`: the primitive returns a list."""

  def rule(args, dims, **params):
    args = [a if d is None else jnp.moveaxis(a, d, 0) for a, d in zip(args, dims, strict=True)]
    axes = [None if d is None else 0 for d in dims]
    out = jax.vmap(functools.partial(reference, **params), in_axes=axes)(*args)
    return (list(out), [0] * len(out)) if multiple else (out, 0)

  return rule
