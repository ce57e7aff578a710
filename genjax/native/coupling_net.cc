// A RealNVP coupling net's two narrow layers as one CPU kernel (XLA FFI custom calls).
//
// The net is `T = relu(P W1 + b1) W2`, applied to every pixel: `P [K, N]` are the pixels'
// im2col patches (K = 9 C_in, N = B H W), `W1 [K, F]`, `b1 [F]`, `W2 [F, O]` with the
// responses of the second 3x3 conv's O = 9 C_out taps in `T [O, N]` (the caller sums the
// shifted tap responses). XLA runs it as four library products and element-wise passes
// over the hidden activations `[N, F]` (12.8 MB per 28x28 coupling at batch 64): memory
// bound. Here the hidden activations of 128 pixels at a time stay in the L1 cache, and the
// backward pass recomputes them from P instead of storing them.
//
// Everything is channel-major (pixels on the minor axis), so the products vectorize over
// pixels: 8 pixels per vector, the weights broadcast. Weight gradients are summed per
// fixed chunk of pixels and the chunks' sums added in chunk order, so the results do not
// depend on how many threads ran (bit-identical run to run).
//
//   genjax_coupling_net_fwd(P, W1, b1, W2) -> T
//   genjax_coupling_net_bwd(P, W1, b1, W2, dT) -> (dP, dW1, db1, dW2)

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "common.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using Arg1 = ffi::Buffer<ffi::F32, 1>;
using Arg2 = ffi::Buffer<ffi::F32, 2>;
using Ret1 = ffi::ResultBuffer<ffi::F32, 1>;
using Ret2 = ffi::ResultBuffer<ffi::F32, 2>;

namespace {

using genjax::bc;
using genjax::hsum;
using genjax::ld;
using genjax::ParallelChunks;
using genjax::st;
using genjax::v8;

constexpr int kTile = 128;           // pixels per tile (16 vectors)
constexpr int kChunk = 16 * kTile;   // pixels per weight-gradient partial sum
constexpr int kRV = 4;               // row vectors per product micro-tile (32 pixels)

// C[j][0:32] = init[j] + sum_l A[l][0:32] * B[l][j] for j < JB (C and A pixel-minor).
template <int JB, bool INIT>
inline void RowsBlock(int L, const float* A, int64_t lda, const float* B, int64_t ldb,
                      const float* init, float* C, int64_t ldc) {
  v8 acc[JB][kRV];
#pragma GCC unroll 4
  for (int j = 0; j < JB; ++j)
    for (int v = 0; v < kRV; ++v) acc[j][v] = INIT ? bc(init[j]) : bc(0.f);
  for (int l = 0; l < L; ++l) {
    v8 a[kRV];
    for (int v = 0; v < kRV; ++v) a[v] = ld(A + l * lda + 8 * v);
    for (int j = 0; j < JB; ++j) {
      v8 b = bc(B[l * ldb + j]);
      for (int v = 0; v < kRV; ++v) acc[j][v] += a[v] * b;
    }
  }
  for (int j = 0; j < JB; ++j)
    for (int v = 0; v < kRV; ++v) st(C + j * ldc + 8 * v, acc[j][v]);
}

// C[j][0:kTile] = (init[j] +) sum_{l < L} A[l][0:kTile] * B[l][j] for j < J.
template <bool INIT>
void Rows(int L, int J, const float* A, int64_t lda, const float* B, int64_t ldb,
          const float* init, float* C, int64_t ldc) {
  for (int r = 0; r < kTile; r += 8 * kRV) {
    int j = 0;
    for (; j + 3 <= J; j += 3)
      RowsBlock<3, INIT>(L, A + r, lda, B + j, ldb, init + (INIT ? j : 0), C + j * ldc + r, ldc);
    if (J - j == 2) RowsBlock<2, INIT>(L, A + r, lda, B + j, ldb, init + (INIT ? j : 0), C + j * ldc + r, ldc);
    if (J - j == 1) RowsBlock<1, INIT>(L, A + r, lda, B + j, ldb, init + (INIT ? j : 0), C + j * ldc + r, ldc);
  }
}

// S[l][j] += sum over the tile's pixels of A[l][:] * D[j][:], as 8-lane partial sums.
template <int LB, int JB>
inline void OuterBlock(const float* A, int64_t lda, const float* D, int64_t ldd, v8* S, int64_t lds) {
  v8 acc[LB][JB];
  for (int l = 0; l < LB; ++l)
    for (int j = 0; j < JB; ++j) acc[l][j] = bc(0.f);
  for (int r = 0; r < kTile; r += 8) {
    v8 a[LB], d[JB];
    for (int l = 0; l < LB; ++l) a[l] = ld(A + l * lda + r);
    for (int j = 0; j < JB; ++j) d[j] = ld(D + j * ldd + r);
    for (int l = 0; l < LB; ++l)
      for (int j = 0; j < JB; ++j) acc[l][j] += a[l] * d[j];
  }
  for (int l = 0; l < LB; ++l)
    for (int j = 0; j < JB; ++j) S[l * lds + j] += acc[l][j];
}

template <int LB>
inline void OuterRow(int J, const float* A, int64_t lda, const float* D, int64_t ldd, v8* S, int64_t lds) {
  int j = 0;
  for (; j + 3 <= J; j += 3) OuterBlock<LB, 3>(A, lda, D + j * ldd, ldd, S + j, lds);
  if (J - j == 2) OuterBlock<LB, 2>(A, lda, D + j * ldd, ldd, S + j, lds);
  if (J - j == 1) OuterBlock<LB, 1>(A, lda, D + j * ldd, ldd, S + j, lds);
}

void Outer(int L, int J, const float* A, int64_t lda, const float* D, int64_t ldd, v8* S) {
  int l = 0;
  for (; l + 4 <= L; l += 4) OuterRow<4>(J, A + l * lda, lda, D, ldd, S + l * J, J);
  switch (L - l) {
    case 3: OuterRow<3>(J, A + l * lda, lda, D, ldd, S + l * J, J); break;
    case 2: OuterRow<2>(J, A + l * lda, lda, D, ldd, S + l * J, J); break;
    case 1: OuterRow<1>(J, A + l * lda, lda, D, ldd, S + l * J, J); break;
    default: break;
  }
}

struct Dims {
  int64_t n;
  int k, f, o;
};

// The hidden activations of one tile: H[f][0:kTile] = relu(b1[f] + sum_k P[k][:] W1[k][f]).
void Hidden(const Dims& d, const float* p, int64_t ldp, const float* w1, const float* b1, float* h) {
  Rows<true>(d.k, d.f, p, ldp, w1, d.f, b1, h, kTile);
  for (int64_t i = 0; i < int64_t(d.f) * kTile; i += 8) {
    v8 x = ld(h + i);
    st(h + i, x > 0 ? x : bc(0.f));
  }
}

// Copies rows [r0, r0 + n) of a [rows, ld] pixel-minor array into a zero-padded tile.
void LoadTile(const float* src, int64_t ld, int rows, int64_t r0, int64_t n, float* tile) {
  for (int i = 0; i < rows; ++i) {
    std::memcpy(tile + i * kTile, src + i * ld + r0, n * sizeof(float));
    std::memset(tile + i * kTile + n, 0, (kTile - n) * sizeof(float));
  }
}
void StoreTile(const float* tile, int rows, float* dst, int64_t ld, int64_t r0, int64_t n) {
  for (int i = 0; i < rows; ++i) std::memcpy(dst + i * ld + r0, tile + i * kTile, n * sizeof(float));
}

struct Scratch {
  std::vector<float> h, g, pin, tin, out;
  explicit Scratch(const Dims& d)
      : h(size_t(d.f) * kTile), g(size_t(d.f) * kTile), pin(size_t(d.k) * kTile),
        tin(size_t(d.o) * kTile), out(size_t(std::max(d.k, d.o)) * kTile) {}
};

void FwdTile(const Dims& d, const float* p, const float* w1, const float* b1, const float* w2,
             float* t, int64_t r0, Scratch& s) {
  int64_t n = std::min<int64_t>(kTile, d.n - r0);
  const float* pp = p + r0;
  int64_t ldp = d.n;
  if (n < kTile) {
    LoadTile(p, d.n, d.k, r0, n, s.pin.data());
    pp = s.pin.data();
    ldp = kTile;
  }
  Hidden(d, pp, ldp, w1, b1, s.h.data());
  if (n == kTile) {
    Rows<false>(d.f, d.o, s.h.data(), kTile, w2, d.o, nullptr, t + r0, d.n);
  } else {
    Rows<false>(d.f, d.o, s.h.data(), kTile, w2, d.o, nullptr, s.out.data(), kTile);
    StoreTile(s.out.data(), d.o, t, d.n, r0, n);
  }
}

// One tile of the backward pass; adds the weight gradients' 8-lane partial sums to
// sw1 [K][F], sb1 [F], sw2 [F][O].
void BwdTile(const Dims& d, const float* p, const float* w1, const float* b1, const float* w2t,
             const float* w1t, const float* dt, float* dp, int64_t r0, Scratch& s, v8* sw1, v8* sb1,
             v8* sw2) {
  int64_t n = std::min<int64_t>(kTile, d.n - r0);
  const float* pp = p + r0;
  const float* tt = dt + r0;
  int64_t ldx = d.n;
  if (n < kTile) {
    LoadTile(p, d.n, d.k, r0, n, s.pin.data());
    LoadTile(dt, d.n, d.o, r0, n, s.tin.data());
    pp = s.pin.data();
    tt = s.tin.data();
    ldx = kTile;
  }
  float* h = s.h.data();
  float* g = s.g.data();
  Hidden(d, pp, ldx, w1, b1, h);
  Outer(d.f, d.o, h, kTile, tt, ldx, sw2);                     // dW2 += H dT^T
  Rows<false>(d.o, d.f, tt, ldx, w2t, d.f, nullptr, g, kTile);  // dH = W2 dT
  for (int64_t i = 0; i < int64_t(d.f) * kTile; i += 8) {      // through the ReLU
    v8 x = ld(g + i);
    st(g + i, ld(h + i) > 0 ? x : bc(0.f));
  }
  for (int f = 0; f < d.f; ++f) {                              // db1 += sum of dH
    v8 acc = bc(0.f);
    for (int r = 0; r < kTile; r += 8) acc += ld(g + f * kTile + r);
    sb1[f] += acc;
  }
  Outer(d.k, d.f, pp, ldx, g, kTile, sw1);                      // dW1 += P dH^T
  if (n == kTile) {                                            // dP = W1 dH
    Rows<false>(d.f, d.k, g, kTile, w1t, d.k, nullptr, dp + r0, d.n);
  } else {
    Rows<false>(d.f, d.k, g, kTile, w1t, d.k, nullptr, s.out.data(), kTile);
    StoreTile(s.out.data(), d.k, dp, d.n, r0, n);
  }
}

Dims CheckDims(ffi::Buffer<ffi::F32, 2>& p, ffi::Buffer<ffi::F32, 2>& w1, ffi::Buffer<ffi::F32, 1>& b1,
               ffi::Buffer<ffi::F32, 2>& w2, bool* ok) {
  Dims d;
  d.k = int(p.dimensions()[0]);
  d.n = p.dimensions()[1];
  d.f = int(w1.dimensions()[1]);
  d.o = int(w2.dimensions()[1]);
  *ok = w1.dimensions()[0] == d.k && b1.dimensions()[0] == d.f && w2.dimensions()[0] == d.f;
  return d;
}

std::vector<float> Transposed(const float* a, int rows, int cols) {
  std::vector<float> t(size_t(rows) * cols);
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) t[size_t(j) * rows + i] = a[size_t(i) * cols + j];
  return t;
}

ffi::Error Fwd(ffi::ThreadPool pool, ffi::Buffer<ffi::F32, 2> p, ffi::Buffer<ffi::F32, 2> w1,
               ffi::Buffer<ffi::F32, 1> b1, ffi::Buffer<ffi::F32, 2> w2, ffi::ResultBuffer<ffi::F32, 2> t) {
  bool ok;
  Dims d = CheckDims(p, w1, b1, w2, &ok);
  if (!ok || t->dimensions()[0] != d.o || t->dimensions()[1] != d.n)
    return ffi::Error::InvalidArgument("genjax_coupling_net_fwd: inconsistent shapes");
  const float *pp = p.typed_data(), *pw1 = w1.typed_data(), *pb1 = b1.typed_data(), *pw2 = w2.typed_data();
  float* pt = t->typed_data();
  int64_t tiles = (d.n + kTile - 1) / kTile;
  ParallelChunks(pool, (d.n + kChunk - 1) / kChunk, [&d] { return std::make_unique<Scratch>(d); }, [&](int64_t c, Scratch& s) {
    int64_t end = std::min<int64_t>(tiles, (c + 1) * (kChunk / kTile));
    for (int64_t i = c * (kChunk / kTile); i < end; ++i) FwdTile(d, pp, pw1, pb1, pw2, pt, i * kTile, s);
  });
  return ffi::Error::Success();
}

ffi::Error Bwd(ffi::ThreadPool pool, ffi::Buffer<ffi::F32, 2> p, ffi::Buffer<ffi::F32, 2> w1,
               ffi::Buffer<ffi::F32, 1> b1, ffi::Buffer<ffi::F32, 2> w2, ffi::Buffer<ffi::F32, 2> dt,
               ffi::ResultBuffer<ffi::F32, 2> dp, ffi::ResultBuffer<ffi::F32, 2> dw1,
               ffi::ResultBuffer<ffi::F32, 1> db1, ffi::ResultBuffer<ffi::F32, 2> dw2) {
  bool ok;
  Dims d = CheckDims(p, w1, b1, w2, &ok);
  if (!ok || dt.dimensions()[0] != d.o || dt.dimensions()[1] != d.n)
    return ffi::Error::InvalidArgument("genjax_coupling_net_bwd: inconsistent shapes");
  const float *pp = p.typed_data(), *pw1 = w1.typed_data(), *pb1 = b1.typed_data(), *pdt = dt.typed_data();
  std::vector<float> w2t = Transposed(w2.typed_data(), d.f, d.o);  // [O][F]
  std::vector<float> w1t = Transposed(pw1, d.k, d.f);              // [F][K]
  float* pdp = dp->typed_data();
  int64_t tiles = (d.n + kTile - 1) / kTile;
  int64_t chunks = (d.n + kChunk - 1) / kChunk;
  // Per chunk: the weight gradients' sums, [K F | F | F O] floats.
  const size_t per = size_t(d.k) * d.f + d.f + size_t(d.f) * d.o;
  std::vector<float> sums(per * chunks);
  ParallelChunks(pool, chunks, [&d] { return std::make_unique<Scratch>(d); }, [&](int64_t c, Scratch& s) {
    std::vector<v8> part(per, bc(0.f));
    v8 *sw1 = part.data(), *sb1 = sw1 + size_t(d.k) * d.f, *sw2 = sb1 + d.f;
    int64_t end = std::min<int64_t>(tiles, (c + 1) * (kChunk / kTile));
    for (int64_t i = c * (kChunk / kTile); i < end; ++i)
      BwdTile(d, pp, pw1, pb1, w2t.data(), w1t.data(), pdt, pdp, i * kTile, s, sw1, sb1, sw2);
    for (size_t i = 0; i < per; ++i) sums[c * per + i] = hsum(part[i]);
  });
  float *ow1 = dw1->typed_data(), *ob1 = db1->typed_data(), *ow2 = dw2->typed_data();
  for (size_t i = 0; i < per; ++i) {
    float acc = 0.f;
    for (int64_t c = 0; c < chunks; ++c) acc += sums[c * per + i];
    if (i < size_t(d.k) * d.f) ow1[i] = acc;
    else if (i < size_t(d.k) * d.f + d.f) ob1[i - size_t(d.k) * d.f] = acc;
    else ow2[i - size_t(d.k) * d.f - d.f] = acc;
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GenjaxCouplingNetFwd, Fwd,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Arg2>()
                                  .Arg<Arg2>()
                                  .Arg<Arg1>()
                                  .Arg<Arg2>()
                                  .Ret<Arg2>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(GenjaxCouplingNetBwd, Bwd,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Arg2>()
                                  .Arg<Arg2>()
                                  .Arg<Arg1>()
                                  .Arg<Arg2>()
                                  .Arg<Arg2>()
                                  .Ret<Arg2>()
                                  .Ret<Arg2>()
                                  .Ret<Arg1>()
                                  .Ret<Arg2>());
