/* A retaining allocator for large blocks, preloaded (LD_PRELOAD) by genjax's launch scripts.

Why (measured, README benchmark section and docs/design.md): XLA:CPU takes a compiled step's
temporaries (2.3 GB for the PixelCNN peer step) and its Eigen matmuls' packing buffers (61 MB
each) from malloc afresh on every execution, and glibc serves every block above 32 MiB with a
fresh mmap and returns it with munmap. So each step faults in, and the kernel zeroes, gigabytes
of new pages: a fifth to a third of the PixelCNN step's CPU time went to the kernel. glibc cannot keep
such blocks (its mmap threshold stops at 32 MiB, and serving them from the heap fragments it:
12.9 GB resident after 5 steps, measured).

What it does: requests of at least RETAIN_MIN (1 MiB; glibc's heaps and thread arenas trim and
re-fault blocks of 1-32 MiB too) from malloc, calloc, realloc, memalign, posix_memalign and
aligned_alloc are carved from one reserved range of address space (twice physical memory,
made readable and writable as it is used), in 2 MiB granules (2 MiB aligned, advised as
transparent huge pages). A freed block stays mapped
and goes back on a free list (best fit, coalesced with its neighbours), so the next step's
blocks of the same sizes reuse the same, already faulted-in pages. Free memory kept mapped is
capped (GENJAX_RETAIN_MAX_MB, default a quarter of physical memory): past the cap the largest
free extents are released to the kernel (MADV_DONTNEED) and fault in afresh when reused.
Everything smaller, and every request it cannot serve (the range full, an alignment above
2 MiB), goes to glibc's own functions (__libc_malloc and friends), so the program sees
glibc's malloc apart from where its large blocks live. calloc of a large block zeroes it.

Thread safety: one mutex around the large-block lists (large requests are few); ownership of a
pointer is a range check against the reserved range, without the lock. fork: the lock is taken
around fork (pthread_atfork), so a child never inherits it held.

genjax_retain_stats() reports the range's use, for the start-up line and the tests. */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);

#define GRAIN ((size_t)2 << 20)              /* 2 MiB: the huge-page size, unit and alignment */
#ifndef RETAIN_MIN
#define RETAIN_MIN ((size_t)1 << 20) /* smaller requests stay with glibc */
#endif
#define MAX_FREE 512
#define MAX_LIVE 4096

typedef struct {
  size_t off, len;
  int dirty; /* may hold faulted-in pages (not released since last use) */
} extent;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uintptr_t base;   /* 0 until the range is reserved */
static size_t reserved;  /* its length: twice physical memory, 1 GiB to 1 TiB (PROT_NONE until used) */
static int disabled;     /* the reservation failed: everything goes to glibc */
static size_t frontier;  /* bytes of the range made readable and writable */
static extent free_list[MAX_FREE]; /* sorted by offset, never adjacent (coalesced) */
static int n_free;
static extent live[MAX_LIVE];
static int n_live;
static size_t live_bytes, dirty_free_bytes, retain_cap;
static size_t (*glibc_usable_size)(void *);

static int ours(const void *p) {
  uintptr_t b = __atomic_load_n(&base, __ATOMIC_ACQUIRE); /* set after `reserved` */
  return b && (uintptr_t)p - b < reserved;
}

static void atfork_prepare(void) { pthread_mutex_lock(&lock); }
static void atfork_release(void) { pthread_mutex_unlock(&lock); }

__attribute__((constructor)) static void retain_init(void) {
  pthread_atfork(atfork_prepare, atfork_release, atfork_release);
}

static size_t physical_memory(void) {
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? (size_t)pages * (size_t)page : (size_t)16 << 30;
}

static size_t default_cap(void) {
  const char *env = getenv("GENJAX_RETAIN_MAX_MB");
  if (env && *env) {
    char *end;
    unsigned long long mb = strtoull(env, &end, 10);
    if (*end == '\0') return (size_t)mb << 20;
  }
  return physical_memory() / 4;
}

/* With the lock held. */
static int reserve(void) {
  if (base) return 1;
  if (disabled) return 0;
  size_t len = 2 * physical_memory();
  if (len < ((size_t)1 << 30)) len = (size_t)1 << 30;
  if (len > ((size_t)1 << 40)) len = (size_t)1 << 40;
  len &= ~(GRAIN - 1);
  void *p = mmap(NULL, len + GRAIN, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    disabled = 1;
    return 0;
  }
  retain_cap = default_cap();
  reserved = len;
  __atomic_store_n(&base, ((uintptr_t)p + GRAIN - 1) & ~(uintptr_t)(GRAIN - 1), __ATOMIC_RELEASE);
  return 1;
}

static int grow(size_t bytes) {
  if (frontier + bytes > reserved) return 0;
  void *at = (void *)(base + frontier);
  if (mprotect(at, bytes, PROT_READ | PROT_WRITE) != 0) return 0;
  madvise(at, bytes, MADV_HUGEPAGE); /* advice only: ignored where THP is off */
  frontier += bytes;
  return 1;
}

static void remove_free(int i) {
  memmove(&free_list[i], &free_list[i + 1], (size_t)(n_free - i - 1) * sizeof(extent));
  n_free--;
}

/* A block of n bytes (a multiple of GRAIN), or NULL. With the lock held. */
static void *take(size_t n) {
  if (n_live == MAX_LIVE || !reserve()) return NULL;
  int best = -1;
  for (int i = 0; i < n_free; i++)
    if (free_list[i].len >= n && (best < 0 || free_list[i].len < free_list[best].len)) best = i;
  size_t off;
  if (best >= 0) {
    extent *e = &free_list[best];
    off = e->off;
    if (e->dirty) dirty_free_bytes -= n;
    e->off += n;
    e->len -= n;
    if (e->len == 0) remove_free(best);
  } else if (n_free > 0 && free_list[n_free - 1].off + free_list[n_free - 1].len == frontier) {
    extent *e = &free_list[n_free - 1]; /* the last free extent ends at the frontier: extend it */
    if (!grow(n - e->len)) return NULL;
    off = e->off;
    if (e->dirty) dirty_free_bytes -= e->len;
    remove_free(n_free - 1);
  } else {
    off = frontier;
    if (!grow(n)) return NULL;
  }
  live[n_live].off = off;
  live[n_live].len = n;
  live[n_live].dirty = 1;
  n_live++;
  live_bytes += n;
  return (void *)(base + off);
}

static void release_over_cap(void) {
  while (dirty_free_bytes > retain_cap) {
    int big = -1;
    for (int i = 0; i < n_free; i++)
      if (free_list[i].dirty && (big < 0 || free_list[i].len > free_list[big].len)) big = i;
    if (big < 0) break;
    madvise((void *)(base + free_list[big].off), free_list[big].len, MADV_DONTNEED);
    free_list[big].dirty = 0;
    dirty_free_bytes -= free_list[big].len;
  }
}

/* Returns a block to the free list. With the lock held. */
static void give_back(void *p) {
  size_t off = (uintptr_t)p - base, len = 0;
  for (int i = 0; i < n_live; i++)
    if (live[i].off == off) {
      len = live[i].len;
      live[i] = live[--n_live];
      break;
    }
  if (!len) return; /* not a block's start: ignore, as glibc would abort; never corrupt the lists */
  live_bytes -= len;
  int i = 0;
  while (i < n_free && free_list[i].off < off) i++;
  int merge_prev = i > 0 && free_list[i - 1].off + free_list[i - 1].len == off;
  int merge_next = i < n_free && off + len == free_list[i].off;
  /* Merged extents count as dirty if any part is (conservative: releases more, never less). */
  if (merge_prev) {
    extent *e = &free_list[i - 1];
    if (!e->dirty) dirty_free_bytes += e->len;
    e->dirty = 1;
    e->len += len;
    dirty_free_bytes += len;
    if (merge_next) {
      if (!free_list[i].dirty) dirty_free_bytes += free_list[i].len;
      e->len += free_list[i].len;
      remove_free(i);
    }
  } else if (merge_next) {
    extent *e = &free_list[i];
    if (!e->dirty) dirty_free_bytes += e->len;
    e->dirty = 1;
    e->off = off;
    e->len += len;
    dirty_free_bytes += len;
  } else if (n_free < MAX_FREE) {
    memmove(&free_list[i + 1], &free_list[i], (size_t)(n_free - i) * sizeof(extent));
    free_list[i].off = off;
    free_list[i].len = len;
    free_list[i].dirty = 1;
    n_free++;
    dirty_free_bytes += len;
  } else {
    /* The free list is full: release the pages; the address range is leaked, not reused. */
    madvise(p, len, MADV_DONTNEED);
  }
  release_over_cap();
}

static size_t block_len(void *p) {
  size_t off = (uintptr_t)p - base, len = 0;
  pthread_mutex_lock(&lock);
  for (int i = 0; i < n_live; i++)
    if (live[i].off == off) len = live[i].len;
  pthread_mutex_unlock(&lock);
  return len;
}

static void *big_alloc(size_t size) {
  if (size > ((size_t)1 << 40)) return NULL;
  size_t n = (size + GRAIN - 1) & ~(GRAIN - 1);
  pthread_mutex_lock(&lock);
  void *p = take(n);
  pthread_mutex_unlock(&lock);
  return p;
}

void *malloc(size_t size) {
  if (size >= RETAIN_MIN) {
    void *p = big_alloc(size);
    if (p) return p;
  }
  return __libc_malloc(size);
}

void free(void *p) {
  if (!p) return;
  if (ours(p)) {
    pthread_mutex_lock(&lock);
    give_back(p);
    pthread_mutex_unlock(&lock);
    return;
  }
  __libc_free(p);
}

void *calloc(size_t count, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(count, size, &total)) {
    errno = ENOMEM;
    return NULL;
  }
  if (total >= RETAIN_MIN) {
    void *p = big_alloc(total);
    if (p) return memset(p, 0, total); /* a reused block holds old data */
  }
  return __libc_calloc(count, size);
}

void *realloc(void *p, size_t size) {
  if (!p) return malloc(size);
  if (!ours(p)) return __libc_realloc(p, size);
  if (size == 0) {
    free(p);
    return NULL;
  }
  size_t len = block_len(p);
  if (size <= len) return p;
  void *q = malloc(size);
  if (!q) return NULL;
  memcpy(q, p, len);
  free(p);
  return q;
}

static void *aligned(size_t align, size_t size) {
  if (size >= RETAIN_MIN && align <= GRAIN) {
    void *p = big_alloc(size);
    if (p) return p;
  }
  return __libc_memalign(align, size);
}

void *memalign(size_t align, size_t size) { return aligned(align, size); }

void *aligned_alloc(size_t align, size_t size) {
  if (align == 0 || (align & (align - 1))) {
    errno = EINVAL;
    return NULL;
  }
  return aligned(align, size);
}

int posix_memalign(void **out, size_t align, size_t size) {
  if (align % sizeof(void *) || (align & (align - 1))) return EINVAL;
  void *p = aligned(align, size);
  if (!p && size) return ENOMEM;
  *out = p;
  return 0;
}

void *valloc(size_t size) { return __libc_valloc(size); }
void *pvalloc(size_t size) { return __libc_pvalloc(size); }

size_t malloc_usable_size(void *p) {
  if (!p) return 0;
  if (ours(p)) return block_len(p);
  if (!glibc_usable_size) glibc_usable_size = (size_t(*)(void *))dlsym(RTLD_NEXT, "malloc_usable_size");
  return glibc_usable_size ? glibc_usable_size(p) : 0;
}

/* out[0..4]: bytes made usable, bytes in live blocks, free bytes kept mapped (dirty),
   free bytes released, live block count. */
void genjax_retain_stats(size_t out[5]) {
  pthread_mutex_lock(&lock);
  size_t clean = 0;
  for (int i = 0; i < n_free; i++)
    if (!free_list[i].dirty) clean += free_list[i].len;
  out[0] = frontier;
  out[1] = live_bytes;
  out[2] = dirty_free_bytes;
  out[3] = clean;
  out[4] = (size_t)n_live;
  pthread_mutex_unlock(&lock);
}
