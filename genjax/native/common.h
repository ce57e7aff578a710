// What genjax's XLA FFI kernels share: 8-float AVX2 vectors and deterministic parallel
// loops over fixed chunks.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>

#include "xla/ffi/api/ffi.h"

namespace genjax {

typedef float v8 __attribute__((vector_size(32)));

inline v8 ld(const float* p) {
  v8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void st(float* p, v8 v) { std::memcpy(p, &v, sizeof(v)); }
inline v8 bc(float x) { return v8{x, x, x, x, x, x, x, x}; }
inline float hsum(v8 v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

// Runs body(chunk, scratch) for chunk < num_chunks on the calling thread and the XLA
// thread pool's, each worker with its own scratch from make() (made only once the worker
// has a chunk: a late helper touches nothing). Chunks are taken dynamically; each chunk's
// result goes to its own slot, so the outcome does not depend on the schedule. The calling
// thread works too and waits only for helpers that took a chunk, so a busy pool cannot
// deadlock it.
template <typename Make, typename Body>
void ParallelChunks(xla::ffi::ThreadPool& pool, int64_t num_chunks, Make make, Body body) {
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int> active{0};
    std::mutex mu;
    std::condition_variable cv;
  };
  auto state = std::make_shared<State>();
  auto work = [state, num_chunks, &make, &body]() {
    decltype(make()) s;
    for (int64_t c; (c = state->next.fetch_add(1)) < num_chunks;) {
      if (!s) s = make();
      body(c, *s);
    }
  };
  int64_t helpers = std::min<int64_t>(pool.num_threads(), num_chunks - 1);
  for (int64_t i = 0; i < helpers; ++i) {
    pool.Schedule([state, work]() {
      state->active.fetch_add(1);
      work();
      if (state->active.fetch_sub(1) == 1) {
        std::lock_guard<std::mutex> lock(state->mu);
        state->cv.notify_all();
      }
    });
  }
  work();
  std::unique_lock<std::mutex> lock(state->mu);
  state->cv.wait(lock, [&] { return state->active.load() == 0; });
}

}  // namespace genjax
