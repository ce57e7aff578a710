"""Test-session setup.

Four host CPU devices are forced before JAX is imported, so one process can compare
a 1-device mesh with a 4-device mesh; everything else uses the first device. The
persistent compilation cache lets tests that build the same program share one compile.

The suite compiles for compile speed: `JAX_DISABLE_MOST_OPTIMIZATIONS=1` (JAX's documented switch:
XLA's LLVM backend at -O0, no expensive passes) and, with it, XLA:CPU's legacy fusion emitters
(`--xla_cpu_use_fusion_emitters=false`), both passed on to the processes tests start
(`helpers.child_env`). Compiling is most of the suite's time (README, "Tests and benchmarks";
`docs/design.md`, "Test suite time"); results differ from optimized code only at float rounding,
and every bit-for-bit comparison in the suite is between runs made under the same setting.
`JAX_DISABLE_MOST_OPTIMIZATIONS=0 make test` runs the suite fully optimized, with XLA's default emitters.
"""

import os
import sys
import tempfile

_FAST_COMPILE = os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1") == "1"
# At -O0, XLA:CPU's legacy fusion emitters compile faster than its MLIR ones (RealNVP's tiny train
# step: 4.4 s against 7.1-7.3 s; docs/design.md, "Test suite time"); fully optimized they are slower.
os.environ.setdefault(
  "XLA_FLAGS",
  "--xla_force_host_platform_device_count=4" + (" --xla_cpu_use_fusion_emitters=false" if _FAST_COMPILE else ""),
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

jax.config.update(
  "jax_compilation_cache_dir",
  os.environ.get("GENJAX_TEST_JAX_CACHE", os.path.join(tempfile.gettempdir(), "genjax-test-jax-cache")),
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
