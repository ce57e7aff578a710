// The jaxlib whose XLA FFI headers genjax's kernels were compiled against: genjax loads the
// library only under that one (genjax/nn/native.py).

#ifndef GENJAX_JAXLIB_VERSION
#define GENJAX_JAXLIB_VERSION "unknown"
#endif

extern "C" const char* GenjaxKernelsJaxlibVersion() { return GENJAX_JAXLIB_VERSION; }
