// A convolution's weight gradient for narrow layers (an XLA FFI custom call).
//
//   genjax_conv_wgrad(X [B, Hp, Wp, C], G [B, Ho, Wo, O]; sh, sw) -> dW [KH, KW C, O]
//
//   dW[i, (j, c), o] = sum_{b, y, x} X[b, y sh + i, x sw + j, c] G[b, y, x, o]
//
// X is the convolution's input already padded (a 'VALID' window), G the gradient of its
// output, both NHWC; the window size comes from dW's shape. A 1x1 convolution and a dense
// layer over pixels (`x @ W`) are the case KH = KW = 1: `dW = X^T G`, a product over every
// pixel.
//
// XLA:CPU runs these products, for 16-256 channels over 10^4-10^5 pixels, at 10-30% of the
// machine's roofline (`python -m benchmarks.op_report --config=configs/ddpm.py:peer`): the
// U-Net's 1x1 skip convolutions and attention projections, its strided downsampling. Here
// a window row of a pixel, `X[b, y sh + i, x sw : x sw + KW, :]`, is KW C contiguous
// floats, so every output pixel contributes one outer product `row (x) G[b, y, x, :]` per
// window row i, and the products are accumulated in registers: 4-8 rows of dW times 8-24
// of its columns (AVX2 vectors over O), over 32-256 pixels at a time held in the L1 cache.
//
// Pixels are split into chunks fixed by the shapes; each chunk's sum goes to its own slot
// and the slots are added in chunk order, so the result does not depend on the number of
// threads.

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "common.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using Arg4 = ffi::Buffer<ffi::F32, 4>;
using Buf3 = ffi::Buffer<ffi::F32, 3>;

namespace {

using genjax::bc;
using genjax::ld;
using genjax::ParallelChunks;
using genjax::st;
using genjax::v8;

constexpr int64_t kMaxChunk = 2048;  // pixels per partial sum, at most

struct Dims {
  int64_t b, hp, wp, c, ho, wo, o, kh, kw, sh, sw;
  int64_t k() const { return kw * c; }  // one window row: dW's rows per i
  int64_t pixels() const { return b * ho * wo; }
  // Pixels per register pass: a power of two from 32 to 256 whose new input and output
  // floats, (sw C + O) per pixel, fill about 48 KiB (the L1 cache; measured best at 32-128).
  int64_t block() const {
    int64_t n = 256;
    while (n > 32 && n * (sw * c + o) * 4 > 48 * 1024) n /= 2;
    return n;
  }
  // Pixels per partial sum: whole blocks, at least 16 chunks where there are enough pixels
  // (so two threads' shares differ by at most one small chunk), at most kMaxChunk.
  int64_t chunk() const {
    int64_t n = block(), want = (pixels() + 15) / 16;
    return std::min(kMaxChunk, std::max(n, (want + n - 1) / n * n));
  }
};

// A run of output pixels along one output row: their window rows start at `a` (stride
// sw C floats) and their output gradients at `g` (stride O).
struct Run {
  const float* a;
  const float* g;
  int64_t n;
};

// C[k][0:8 OV] += sum over the runs' pixels of A[k0 + k] G[o0 : o0 + 8 OV], for k < KR (C
// row-major, ldc).
template <int KR, int OV>
void Tile(const Run* runs, int num_runs, int64_t k0, int64_t o0, int64_t astride, int64_t gstride, float* c,
          int64_t ldc) {
  v8 acc[KR][OV];
  for (int r = 0; r < KR; ++r)
    for (int v = 0; v < OV; ++v) acc[r][v] = bc(0.f);
  for (int s = 0; s < num_runs; ++s) {
    const float* a = runs[s].a + k0;
    const float* g = runs[s].g + o0;
    for (int64_t n = runs[s].n; n > 0; --n, a += astride, g += gstride) {
      v8 gv[OV];
      for (int v = 0; v < OV; ++v) gv[v] = ld(g + 8 * v);
      for (int r = 0; r < KR; ++r) {
        v8 av = bc(a[r]);
        for (int v = 0; v < OV; ++v) acc[r][v] += av * gv[v];
      }
    }
  }
  for (int r = 0; r < KR; ++r)
    for (int v = 0; v < OV; ++v) st(c + r * ldc + 8 * v, ld(c + r * ldc + 8 * v) + acc[r][v]);
}

template <int OV, int KR>
void TileTail(int kr, const Run* runs, int num_runs, int64_t k0, int64_t o0, int64_t astride, int64_t gstride,
              float* c, int64_t ldc) {
  if constexpr (KR > 0) {
    if (kr == KR) return Tile<KR, OV>(runs, num_runs, k0, o0, astride, gstride, c, ldc);
    return TileTail<OV, KR - 1>(kr, runs, num_runs, k0, o0, astride, gstride, c, ldc);
  }
}

// Rows of dW per register tile for OV vectors of columns: 16 AVX2 registers hold KR OV
// accumulators, OV loads of G and one broadcast of A.
template <int OV>
constexpr int Rows() {
  return OV == 3 ? 4 : OV == 2 ? 6 : 8;
}

// All of dW's rows for columns o0 : o0 + 8 OV, with the runs of one window row.
template <int OV>
void Columns(const Dims& d, const Run* runs, int num_runs, int64_t o0, float* c) {
  constexpr int KR = Rows<OV>();
  const int64_t k = d.k(), astride = d.sw * d.c;
  int64_t k0 = 0;
  for (; k0 + KR <= k; k0 += KR) Tile<KR, OV>(runs, num_runs, k0, o0, astride, d.o, c + k0 * d.o + o0, d.o);
  if (k0 < k) TileTail<OV, KR>(int(k - k0), runs, num_runs, k0, o0, astride, d.o, c + k0 * d.o + o0, d.o);
}

// Adds the contributions of output pixels [q0, q1) to part [KH, KW C, O].
void Block(const Dims& d, const float* x, const float* g, int64_t q0, int64_t q1, float* part,
           std::vector<Run>& runs) {
  for (int64_t i = 0; i < d.kh; ++i) {
    runs.clear();
    for (int64_t q = q0; q < q1;) {
      int64_t row = q / d.wo, x0 = q % d.wo, n = std::min(d.wo - x0, q1 - q);
      int64_t b = row / d.ho, y = row % d.ho;
      runs.push_back({x + ((b * d.hp + y * d.sh + i) * d.wp + x0 * d.sw) * d.c, g + q * d.o, n});
      q += n;
    }
    float* c = part + i * d.k() * d.o;
    int64_t o0 = 0;
    // Column blocks of 24 while that leaves a multiple of 16 or more; then 16s, then 8.
    for (; d.o - o0 >= 24 && d.o - o0 != 32 && d.o - o0 != 16; o0 += 24) Columns<3>(d, runs.data(), int(runs.size()), o0, c);
    for (; d.o - o0 >= 16; o0 += 16) Columns<2>(d, runs.data(), int(runs.size()), o0, c);
    for (; d.o - o0 >= 8; o0 += 8) Columns<1>(d, runs.data(), int(runs.size()), o0, c);
  }
}

ffi::Error WGrad(ffi::ThreadPool pool, Arg4 x, Arg4 g,
                 int64_t sh, int64_t sw, ffi::ResultBuffer<ffi::F32, 3> dw) {
  Dims d;
  auto xd = x.dimensions(), gd = g.dimensions(), wd = dw->dimensions();
  d.b = xd[0], d.hp = xd[1], d.wp = xd[2], d.c = xd[3];
  d.ho = gd[1], d.wo = gd[2], d.o = gd[3];
  d.kh = wd[0], d.sh = sh, d.sw = sw;
  d.kw = d.c > 0 ? wd[1] / d.c : 0;
  if (gd[0] != d.b || d.c <= 0 || d.kw * d.c != wd[1] || wd[2] != d.o || d.o % 8 != 0 || sh < 1 || sw < 1 ||
      d.kh < 1 || d.kw < 1 || (d.ho > 0 && (d.ho - 1) * sh + d.kh > d.hp) || (d.wo > 0 && (d.wo - 1) * sw + d.kw > d.wp))
    return ffi::Error::InvalidArgument("genjax_conv_wgrad: inconsistent shapes");
  const size_t per = size_t(d.kh) * d.k() * d.o;
  const int64_t pixels = d.pixels(), chunk_px = d.chunk();
  const int64_t chunks = std::max<int64_t>(1, (pixels + chunk_px - 1) / chunk_px);
  std::vector<float> sums(per * chunks, 0.f);
  const float *px = x.typed_data(), *pg = g.typed_data();
  ParallelChunks(pool, chunks, [] { return std::make_unique<std::vector<Run>>(); },
                 [&](int64_t chunk, std::vector<Run>& runs) {
                   int64_t end = std::min(pixels, (chunk + 1) * chunk_px);
                   for (int64_t q = chunk * chunk_px; q < end; q += d.block())
                     Block(d, px, pg, q, std::min(end, q + d.block()), sums.data() + chunk * per, runs);
                 });
  // dW = the chunks' sums added in chunk order, over slices of dW on the same threads.
  float* out = dw->typed_data();
  constexpr int64_t kSlice = 4096;
  const int64_t slices = (int64_t(per) + kSlice - 1) / kSlice;
  ParallelChunks(pool, slices, [] { return std::make_unique<int>(0); }, [&](int64_t slice, int&) {
    const size_t lo = size_t(slice) * kSlice, hi = std::min(per, lo + kSlice);
    std::copy(sums.begin() + lo, sums.begin() + hi, out + lo);
    for (int64_t c = 1; c < chunks; ++c)
      for (size_t i = lo; i < hi; ++i) out[i] += sums[c * per + i];
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GenjaxConvWGrad, WGrad,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Arg4>()
                                  .Arg<Arg4>()
                                  .Attr<int64_t>("sh")
                                  .Attr<int64_t>("sw")
                                  .Ret<Buf3>());
