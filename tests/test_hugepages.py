"""genjax.hugepages: when the malloc huge-page tunable is set, the re-execution, and unchanged results."""

import json
import subprocess
import sys

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
print(json.dumps([os.getpid(), os.environ.get("GLIBC_TUNABLES"), sys.argv[1:]]), flush=True)
hugepages.reexec()
print("after", flush=True)
"""


def _run(code, env):
  cmd = [sys.executable, "-c", code, "a", "b"]
  return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def test_reexec_restarts_the_same_process_once_with_the_tunable(monkeypatch):
  import os

  env = {k: v for k, v in os.environ.items() if k not in (hugepages.ENV, hugepages.OFF, hugepages.MARK)}
  p = _run(_PROBE, env)
  assert p.returncode == 0, p.stderr
  lines = p.stdout.splitlines()
  assert lines[-1] == "after" and lines.count("after") == 1
  starts = [json.loads(line) for line in lines[:-1]]
  if hugepages.decide(env)[0]:
    # Replaced once by itself: same PID, same arguments, the tunable set the second time.
    assert len(starts) == 2 and starts[0][0] == starts[1][0] and starts[0][2] == starts[1][2] == ["a", "b"]
    assert starts[0][1] is None and starts[1][1] == hugepages.TUNABLE
  else:
    assert len(starts) == 1
  # Switched off: never re-executed.
  p = _run(_PROBE, {**env, hugepages.OFF: "1"})
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


def test_results_are_bit_identical_with_huge_pages():
  import os

  env = {k: v for k, v in os.environ.items() if k not in (hugepages.ENV, hugepages.MARK)}
  off = _run(_RESULT, env)
  on = _run(_RESULT, {**env, hugepages.ENV: hugepages.TUNABLE})
  assert off.returncode == 0 and on.returncode == 0, off.stderr + on.stderr
  assert on.stdout == off.stdout
  assert "on" in hugepages.describe({hugepages.ENV: hugepages.TUNABLE})
  assert "off" in hugepages.describe({hugepages.OFF: "1"})
