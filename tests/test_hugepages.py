"""genjax.hugepages: when the malloc huge-page tunable is set and the retaining allocator preloaded, the
re-execution, the allocator's behaviour (reuse, zeroing, copying, alignment, its cap, threads, fork) and
unchanged results."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

from genjax import hugepages


def test_decide_respects_the_user_and_the_off_switch():
  assert hugepages.decide({hugepages.OFF: "1"}) == (False, f"{hugepages.OFF}=1")
  on, why = hugepages.decide({hugepages.ENV: "glibc.malloc.hugetlb=0"})
  assert not on and "already sets" in why
  # A user's other tunables are kept, the huge-page one appended.
  env = {hugepages.ENV: "glibc.malloc.arena_max=2", "X": "1"}
  out = hugepages.environ(env)
  assert out["X"] == "1" and env[hugepages.ENV] == "glibc.malloc.arena_max=2"  # a copy; the input is untouched
  if hugepages.decide(env)[0]:
    assert out[hugepages.ENV] == "glibc.malloc.arena_max=2:" + hugepages.TUNABLE
  else:
    assert out[hugepages.ENV] == env[hugepages.ENV]


def test_decide_reads_glibc_and_the_kernel_mode(monkeypatch):
  monkeypatch.setattr(hugepages.sys, "platform", "linux")
  monkeypatch.setattr(hugepages, "_glibc_version", lambda: (2, 31))
  assert hugepages.decide({}) == (False, "needs glibc >= 2.35 (found 2.31)")
  monkeypatch.setattr(hugepages, "_glibc_version", lambda: (2, 36))
  for mode, on in [("madvise", True), ("always", False), ("never", False), (None, False)]:
    monkeypatch.setattr(hugepages, "_thp_mode", lambda mode=mode: mode)
    assert hugepages.decide({})[0] is on, mode
  monkeypatch.setattr(hugepages.sys, "platform", "darwin")
  assert hugepages.decide({}) == (False, "not Linux (darwin)")


_PROBE = """
import json, os, sys
from genjax import hugepages
env = os.environ
print(json.dumps([os.getpid(), env.get("GLIBC_TUNABLES"), sys.argv[1:], env.get("LD_PRELOAD")]), flush=True)
hugepages.reexec()
print("after", flush=True)
"""


def _run(code, env):
  cmd = [sys.executable, "-c", code, "a", "b"]
  return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def test_reexec_restarts_the_same_process_once_with_the_tunable(monkeypatch):
  env = {k: v for k, v in os.environ.items() if k not in _OURS}
  p = _run(_PROBE, env)
  assert p.returncode == 0, p.stderr
  lines = p.stdout.splitlines()
  assert lines[-1] == "after" and lines.count("after") == 1
  starts = [json.loads(line) for line in lines[:-1]]
  pages, retain = hugepages.decide(env)[0], hugepages.decide_retain(env)[0]
  if pages or retain:
    # Replaced once by itself: same PID, same arguments, the settings made the second time.
    assert len(starts) == 2 and starts[0][0] == starts[1][0] and starts[0][2] == starts[1][2] == ["a", "b"]
    assert starts[0][1] is None and starts[1][1] == (hugepages.TUNABLE if pages else None)
    assert starts[0][3] is None and starts[1][3] == (hugepages.retain_library() if retain else None)
  else:
    assert len(starts) == 1
  # Switched off: never re-executed.
  p = _run(_PROBE, {**env, hugepages.OFF: "1", hugepages.RETAIN_OFF: "1"})
  assert p.returncode == 0 and len(p.stdout.splitlines()) == 2, p.stdout


_RESULT = """
import jax, jax.numpy as jnp, numpy as np
x = jax.random.normal(jax.random.PRNGKey(0), (64, 28, 28, 16))
k = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 16, 32))
def f(x, k):
  y = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return jnp.sum(jnp.tanh(y) ** 2)
v, g = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(x, k)
print(np.asarray(v).tobytes().hex(), np.asarray(g[0]).tobytes().hex()[:4000], np.asarray(g[1]).tobytes().hex())
"""


def test_results_are_bit_identical_with_huge_pages_and_the_retaining_allocator():
  env = {k: v for k, v in os.environ.items() if k not in _OURS}
  off = _run(_RESULT, env)
  on = _run(_RESULT, {**env, hugepages.ENV: hugepages.TUNABLE})
  assert off.returncode == 0 and on.returncode == 0, off.stderr + on.stderr
  assert on.stdout == off.stdout
  assert "huge pages on" in hugepages.describe({hugepages.ENV: hugepages.TUNABLE})
  assert "huge pages off" in hugepages.describe({hugepages.OFF: "1"})
  lib = _library()
  retained = _run(_RESULT, {**env, hugepages.ENV: hugepages.TUNABLE, hugepages.PRELOAD: lib})
  assert retained.returncode == 0, retained.stderr
  assert retained.stdout == off.stdout
  assert "large blocks retained" in hugepages.describe({hugepages.PRELOAD: lib})


_OURS = (hugepages.ENV, hugepages.OFF, hugepages.MARK, hugepages.PRELOAD, hugepages.RETAIN_OFF)


def _library() -> str:
  lib = hugepages.retain_library()
  if lib is None:  # a failure wherever the install had a C compiler to build it with
    compiler = shutil.which("cc") or shutil.which(str(sysconfig.get_config_var("CC") or "cc").split()[0])
    assert not compiler, f"a C compiler ({compiler}) is here but the install built no retaining allocator"
    pytest.skip("no C compiler here, so the install built no retaining allocator (it is optional)")
  return lib


def test_decide_retain_respects_the_user_and_the_off_switch(monkeypatch):
  lib = _library()
  assert hugepages.decide_retain({hugepages.RETAIN_OFF: "1"}) == (False, f"{hugepages.RETAIN_OFF}=1")
  on, why = hugepages.decide_retain({hugepages.PRELOAD: "/usr/lib/libjemalloc.so"})
  assert not on and "already set" in why  # a user's LD_PRELOAD is never changed
  assert hugepages.decide_retain({}) == (True, f"built at {lib}")
  assert hugepages.environ({})[hugepages.PRELOAD] == lib
  assert hugepages.PRELOAD not in hugepages.environ({hugepages.RETAIN_OFF: "1"})
  assert "large blocks with glibc (GENJAX_NO_RETAIN=1)" in hugepages.describe({hugepages.RETAIN_OFF: "1"})
  monkeypatch.setattr(hugepages, "retain_library", lambda: None)
  assert hugepages.decide_retain({}) == (False, "not built (the install found no C compiler)")
  monkeypatch.setattr(hugepages.sys, "platform", "darwin")
  assert hugepages.decide_retain({}) == (False, "not Linux (darwin)")


# Drives the preloaded allocator through libc's own entry points (ctypes resolves malloc & co. to the
# preloaded definitions, as every library in the process does) and prints one JSON line of findings.
_ALLOC = """
import ctypes, json, os, sys, threading
from genjax import hugepages
libc = ctypes.CDLL(None)
for name in ("malloc", "calloc", "realloc", "aligned_alloc", "memalign"):
  getattr(libc, name).restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
libc.realloc.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.aligned_alloc.argtypes = libc.memalign.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.malloc_usable_size.argtypes = [ctypes.c_void_p]
libc.malloc_usable_size.restype = ctypes.c_size_t
libc.posix_memalign.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_size_t]
MB = 1 << 20
out = {}
stats = hugepages.retain_stats
a = libc.malloc(40 * MB)
out["usable"] = libc.malloc_usable_size(a)
out["live_after_malloc"] = stats()["live_blocks"]
ctypes.memset(a, 0xAB, 40 * MB)
libc.free(a)
out["kept_after_free"] = stats()["free_kept"]
mapped = stats()["mapped"]
b = libc.malloc(40 * MB)
out["reused_address"] = a == b
libc.free(b)
c = libc.calloc(10, 4 * MB)  # the same (dirty) block again: calloc must zero it
out["calloc_reused"] = c == a
out["calloc_zero"] = ctypes.string_at(c, 40 * MB).count(0) == 40 * MB
ctypes.memmove(c, b"genjax" * 1000, 6000)
d = libc.realloc(c, 100 * MB)  # grows: a new block holding the old contents
out["realloc_kept"] = ctypes.string_at(d, 6000) == b"genjax" * 1000
e = libc.realloc(d, 30 * MB)  # shrinks in place
out["realloc_shrink_in_place"] = e == d
libc.free(e)
p = ctypes.c_void_p()
rc = libc.posix_memalign(ctypes.byref(p), 4096, 20 * MB)
f = libc.aligned_alloc(1 << 16, 20 * MB)
g = libc.memalign(64, 20 * MB)
out["aligned"] = rc == 0 and p.value % 4096 == 0 and f % (1 << 16) == 0 and g % 64 == 0
for x in (p.value, f, g):
  libc.free(x)
small = libc.malloc(100)  # glibc's
out["small_is_glibc"] = stats()["live_blocks"] == 0
libc.free(small)
# Repeating a step's pattern of sizes maps nothing new.
for _ in range(5):
  blocks = [libc.malloc(s * MB) for s in (300, 61, 61, 25, 17)]
  for x in reversed(blocks):
    libc.free(x)
first = stats()["mapped"]
for _ in range(5):
  blocks = [libc.malloc(s * MB) for s in (300, 61, 61, 25, 17)]
  for x in blocks:
    libc.free(x)
out["steady_mapped"] = stats()["mapped"] == first
def churn():
  for i in range(200):
    x = libc.malloc((16 + i % 7) * MB)
    ctypes.memset(x, i % 256, 4096)
    libc.free(x)
threads = [threading.Thread(target=churn) for _ in range(4)]
for t in threads:
  t.start()
for t in threads:
  t.join()
out["threads_live_after"] = stats()["live_blocks"]
pid = os.fork()
if pid == 0:  # the child allocates and frees through the inherited allocator
  x = libc.malloc(64 * MB)
  ctypes.memset(x, 1, 64 * MB)
  libc.free(x)
  os._exit(0)
out["fork_child_status"] = os.waitpid(pid, 0)[1]
out["final"] = stats()
print(json.dumps(out))
"""


def _run_preloaded(code: str, **extra_env) -> dict:
  """Runs `code` in a child with the allocator preloaded -> the JSON of its last line."""
  env = {k: v for k, v in os.environ.items() if k not in _OURS}
  p = subprocess.run(
    [sys.executable, "-c", code],
    capture_output=True,
    text=True,
    timeout=120,
    env={**env, "LD_PRELOAD": _library(), **extra_env},
  )
  assert p.returncode == 0, p.stderr
  return json.loads(p.stdout.strip().splitlines()[-1])


def test_the_retaining_allocator_reuses_zeroes_copies_and_aligns_blocks():
  out = _run_preloaded(_ALLOC)
  MB = 1 << 20
  assert out["usable"] == 40 * MB and out["live_after_malloc"] == 1  # 2 MiB granules: 40 MiB exactly
  assert out["kept_after_free"] >= 40 * MB  # freed, still mapped
  assert out["reused_address"] and out["calloc_reused"] and out["calloc_zero"]
  assert out["realloc_kept"] and out["realloc_shrink_in_place"] and out["aligned"] and out["small_is_glibc"]
  assert out["steady_mapped"], out
  assert out["threads_live_after"] == 0 and out["fork_child_status"] == 0
  assert out["final"]["live"] == 0 and out["final"]["live_blocks"] == 0


def test_the_retaining_allocator_releases_free_memory_past_its_cap():
  code = """
import ctypes, json
from genjax import hugepages
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
x = libc.malloc(64 << 20)
ctypes.memset(x, 7, 64 << 20)
libc.free(x)
print(json.dumps(hugepages.retain_stats()))
"""
  stats = _run_preloaded(code, GENJAX_RETAIN_MAX_MB="16")
  assert stats["free_kept"] <= 16 << 20 and stats["free_released"] >= 64 << 20, stats
