"""Native parts of genjax, built by `pip install` (the rest of the metadata is pyproject.toml).

Both are optional: without a compiler (or, for the kernel, jaxlib's headers in the build
environment) the install goes on without them and genjax runs its portable path.

* `genjax._retain_alloc` (genjax/native/retain_alloc.c): the retaining allocator for large
  blocks that `genjax.hugepages` preloads in the launch scripts.
* `genjax._kernels` (genjax/native/*.cc): genjax's CPU kernels, XLA FFI custom calls
  (`genjax.nn.native`): RealNVP's fused coupling nets (`genjax.nn.coupling_net`) and the
  weight gradient of narrow convolutions (`genjax.nn.conv_grads`). It is compiled against
  the XLA FFI headers of the jaxlib in the build environment (pyproject.toml's build
  requirements; `make setup` pins it to constraints.txt), records that jaxlib's version,
  and is used only when the running jaxlib is the same. x86-64 with AVX2 and FMA only.
"""

import os
import platform

from setuptools import Extension, setup


def _jaxlib():
  try:
    import jaxlib
    import jaxlib.version
  except ImportError:
    return None, None
  include = os.path.join(os.path.dirname(jaxlib.__file__), "include")
  if not os.path.isfile(os.path.join(include, "xla", "ffi", "api", "ffi.h")):
    return None, None
  return include, jaxlib.version.__version__


extensions = [
  Extension("genjax._retain_alloc", ["genjax/native/retain_alloc.c"], optional=True, extra_compile_args=["-O2"]),
]
include, version = _jaxlib()
if include is not None and platform.machine().lower() in ("x86_64", "amd64") and os.name == "posix":
  extensions.append(
    Extension(
      "genjax._kernels",
      ["genjax/native/coupling_net.cc", "genjax/native/conv_wgrad.cc", "genjax/native/version.cc"],
      include_dirs=[include, "genjax/native"],
      depends=["genjax/native/common.h"],
      language="c++",
      optional=True,
      define_macros=[("GENJAX_JAXLIB_VERSION", f'"{version}"')],
      extra_compile_args=["-O3", "-std=c++17", "-mavx2", "-mfma", "-Wno-attributes", "-Wno-return-type"],
    )
  )

setup(ext_modules=extensions)
