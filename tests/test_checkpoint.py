"""Checkpoints and workdirs: one writer, read-only readers, checksums, fallback, retention, locks, config.

Tiny pytrees in the real `TrainState` (no models) keep these to seconds; one test runs the
real training loop on a damaged checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genjax.train import checkpoint as ckpt_lib
from genjax.train import workdir as wd
from genjax.train.checkpoint import (
  CheckpointDamagedError,
  Checkpointer,
  CheckpointMismatchError,
  CheckpointWriteError,
  NoCheckpointError,
  NonFiniteStateError,
  nonfinite_leaves,
)
from genjax.train.manifest import MANIFEST
from genjax.train.state import create_train_state
from tests.helpers import REPO, assert_trees_equal, child_env, tiny_config

METRIC = "test/loss"


def _state(step: int = 0, width: int = 8):
  """A TrainState over a dict of a few arrays whose values depend on `step`."""
  params = {
    "dense": {
      "kernel": jnp.arange(8 * width, dtype=jnp.float32).reshape(8, width) / 7.0 + step,
      "bias": jnp.full((width,), 0.5 * step, jnp.float32),
    },
    "scale": jnp.asarray(1.0 + step, jnp.float32),
  }
  model_state = {"count": jnp.asarray(step, jnp.int32), "stats": jnp.full((3,), float(step))}
  state = create_train_state(params, model_state, optax.adam(1e-3), jax.random.key(0))
  return state.replace(step=jnp.asarray(step, jnp.int32))


def _writer(directory, keep=10, async_save=False):
  return Checkpointer(str(directory), keep=keep, best_metric=METRIC, best_mode="min", async_save=async_save)


def _reader(directory):
  return Checkpointer.reader(str(directory), best_metric=METRIC, best_mode="min")


def _save_steps(directory, losses: dict[int, float | None], **kw):
  with _writer(directory, **kw) as w:
    for step, loss in losses.items():
      w.save(_state(step), data_position=step * 32, metrics=None if loss is None else {METRIC: loss})


def _snapshot(root) -> dict:
  """Every entry under `root` (and root itself): type, size, mtime, inode. Reads only."""
  out = {}
  st = os.lstat(root)
  out["."] = (stat.S_IFMT(st.st_mode), st.st_mtime_ns, st.st_ino)
  for dirpath, dirnames, filenames in os.walk(root):
    for name in dirnames + filenames:
      path = os.path.join(dirpath, name)
      st = os.lstat(path)
      out[os.path.relpath(path, root)] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns, st.st_ino)
  return out


def _warnings(caplog) -> list[str]:
  return [r.getMessage() for r in caplog.records if r.name == "genjax" and r.levelno >= logging.WARNING]


def _mount(*args) -> bool:
  if os.geteuid() != 0 or not shutil.which("mount"):
    return False
  return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def _umount(path) -> None:
  if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def _read_only(path):
  """`path` made read-only for this process: a read-only bind mount as root, chmod otherwise."""
  path = str(path)
  if os.geteuid() == 0:
    if not _mount("--bind", path, path):
      pytest.skip("cannot bind-mount here (root without mount privileges)")
    try:
      if not _mount("-o", "remount,bind,ro", path):
        pytest.skip("cannot remount read-only here")
      yield path
    finally:
      _umount(path)
  else:
    modes = {}
    for dirpath, _, _ in os.walk(path):
      modes[dirpath] = os.stat(dirpath).st_mode
      os.chmod(dirpath, modes[dirpath] & ~0o222)
    try:
      yield path
    finally:
      for d, mode in modes.items():
        os.chmod(d, mode)


@contextlib.contextmanager
def _unwritable(path):
  """No new entries in directory `path`, even while files in it are open for writing; yields the errno.

  Root ignores permission bits, so root makes it immutable (`chattr +i`, EPERM) where the
  filesystem supports that; others chmod it read-only (EACCES).
  """
  path = str(path)
  if os.geteuid() == 0:
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", path], capture_output=True).returncode:
      pytest.skip("cannot make a directory immutable here")
    try:
      yield errno.EPERM
    finally:
      subprocess.run(["chattr", "-i", path], capture_output=True)
  else:
    mode = os.stat(path).st_mode
    os.chmod(path, mode & ~0o222)
    try:
      yield errno.EACCES
    finally:
      os.chmod(path, mode)


def _largest_file(directory: str) -> str:
  """The largest data file of a checkpoint (never manifest.json, which a tiny state can outgrow)."""
  files = [os.path.join(dp, f) for dp, _, fs in os.walk(directory) for f in fs if f != "manifest.json"]
  return max(files, key=os.path.getsize)


# --------------------------------------------------------------------------- basics


def test_save_and_load_round_trip_and_layout(tmp_path):
  d = tmp_path / "ckpt"
  _save_steps(d, {10: 0.9, 20: 0.5, 30: 0.7})
  assert sorted(os.listdir(d)) == [".writer.lock", "10", "20", "30"]  # nothing pending, nothing temporary
  manifest = json.load(open(d / "30" / MANIFEST))
  assert manifest["step"] == 30 and manifest["meta"] == {
    "step": 30,
    "data_position": 960,
    "metrics": {METRIC: 0.7},
  }
  assert any(f.startswith("state/") for f in manifest["files"]) and "meta/metadata" in manifest["files"]
  with _reader(d) as r:
    assert r.all_steps() == [10, 20, 30] and r.latest_step() == 30 and r.best_step() == 20
    assert r.resolve("latest") == 30 and r.resolve("best") == 20 and r.resolve("10") == 10
    state, meta = r.load(_state(0), "latest")
    assert meta == {"step": 30, "data_position": 960, "metrics": {METRIC: 0.7}}
    assert_trees_equal(state, _state(30))
    with pytest.raises(NoCheckpointError, match=r"no checkpoint at step 15 .*available: \[10, 20, 30\]"):
      r.load(_state(0), 15)
    with pytest.raises(ValueError, match="checkpoint must be 'latest', 'best' or a step number >= 0, got 'abc'"):
      r.resolve("abc")


def test_restore_into_a_differently_shaped_state_is_a_mismatch_not_damage(tmp_path):
  d = tmp_path / "ckpt"
  _save_steps(d, {10: None, 20: None})
  with _writer(d) as w:
    with pytest.raises(
      CheckpointMismatchError,
      match=r"step 20 .* is intact but does not fit the state built from this config: "
      r"ema_params.dense.bias is \(8,\) float32 in the checkpoint, \(16,\) float32 here; .* \(and 5 more\)",
    ) as e:
      w.load(_state(0, width=16), "latest")
    assert "\n" not in str(e.value)
    assert w.all_steps() == [10, 20] and not os.path.exists(d / ckpt_lib.DAMAGED_DIR)  # nothing moved aside


# --------------------------------------------------------------------------- damage and fallback


def _damage(d, kind: str) -> tuple[int, str]:
  """Damages the latest checkpoint (step 30) or adds an empty step 40; returns (step, expected reason)."""
  step_dir = os.path.join(d, "30")
  if kind == "truncated-metadata":
    path = os.path.join(step_dir, "state", "_METADATA")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
      f.truncate(size // 2)
    return 30, "truncated"
  if kind == "missing-state-item":
    shutil.rmtree(os.path.join(step_dir, "state"))
    return 30, "missing-item"
  if kind == "empty-step-directory":
    os.makedirs(os.path.join(d, "40"))
    return 40, "empty"
  if kind == "flipped-bytes":
    path = _largest_file(os.path.join(step_dir, "state"))
    data = bytearray(open(path, "rb").read())
    assert len(data) >= 128
    for i in range(64):  # 64 bytes flipped, the file keeps its size
      data[(i * len(data)) // 64] ^= 0xFF
    open(path, "wb").write(bytes(data))
    return 30, "checksum"
  if kind == "missing-manifest":
    os.remove(os.path.join(step_dir, MANIFEST))
    return 30, "no-manifest"
  if kind == "garbled-manifest":
    path = os.path.join(step_dir, MANIFEST)
    text = open(path).read()
    open(path, "w").write(text[: len(text) // 2])
    return 30, "bad-manifest"
  if kind == "binary-manifest":  # bytes that are not UTF-8 (a flipped first byte)
    path = os.path.join(step_dir, MANIFEST)
    data = bytearray(open(path, "rb").read())
    data[0] = 0x84
    open(path, "wb").write(bytes(data))
    return 30, "bad-manifest"
  if kind == "edited-manifest":  # valid JSON, but the metrics were changed by hand
    path = os.path.join(step_dir, MANIFEST)
    m = json.load(open(path))
    m["meta"]["metrics"][METRIC] = 0.0
    json.dump(m, open(path, "w"))
    return 30, "bad-manifest"
  raise AssertionError(kind)


DAMAGE_KINDS = [
  "truncated-metadata",
  "missing-state-item",
  "empty-step-directory",
  "flipped-bytes",
  "missing-manifest",
  "garbled-manifest",
  "binary-manifest",
  "edited-manifest",
]


@pytest.mark.parametrize("kind", DAMAGE_KINDS)
def test_writer_moves_damaged_latest_aside_and_falls_back(tmp_path, caplog, kind):
  caplog.set_level(logging.WARNING, logger="genjax")
  d = tmp_path / "ckpt"
  _save_steps(d, {10: 0.9, 20: 0.5, 30: 0.7})
  bad_step, reason = _damage(str(d), kind)
  good = [10, 20, 30] if bad_step == 40 else [10, 20]  # an empty step 40 is newer than the intact 30
  files_before = sorted(os.listdir(d / str(bad_step)))
  with _writer(d) as w:
    state, meta = w.load(_state(0), "latest")
    assert meta["step"] == good[-1]
    assert_trees_equal(state, _state(good[-1]))
    assert w.all_steps() == good
  moved = d / ckpt_lib.DAMAGED_DIR / f"{bad_step}-{reason}"
  assert moved.is_dir() and sorted(os.listdir(moved)) == files_before  # moved, never deleted
  assert not (d / str(bad_step)).exists()
  lines = _warnings(caplog)
  assert len(lines) == 1 and f"step {bad_step}" in lines[0] and reason in lines[0] and str(moved) in lines[0]
  with _reader(d) as r:  # the next opener sees a clean directory
    assert r.all_steps() == good


@pytest.mark.parametrize("kind", DAMAGE_KINDS)
def test_reader_skips_damaged_latest_leaves_it_in_place_and_falls_back(tmp_path, caplog, kind):
  caplog.set_level(logging.WARNING, logger="genjax")
  d = tmp_path / "ckpt"
  _save_steps(d, {10: 0.9, 20: 0.5, 30: 0.7})
  bad_step, reason = _damage(str(d), kind)
  good = [10, 20, 30] if bad_step == 40 else [10, 20]
  before = _snapshot(d)
  with _reader(d) as r:
    state, meta = r.load(_state(0), "latest")
    assert meta["step"] == good[-1]
    assert_trees_equal(state, _state(good[-1]))
    assert r.latest_step() == good[-1]
    # An explicit request for the damaged step fails in one line naming the problem and what exists.
    with pytest.raises((CheckpointDamagedError, NoCheckpointError)) as e:
      r.load(_state(0), bad_step)
    assert "\n" not in str(e.value) and f"step {bad_step}" in str(e.value) and str(good) in str(e.value)
  assert _snapshot(d) == before  # left in place, nothing written
  lines = _warnings(caplog)
  assert len(lines) == 1 and f"step {bad_step}" in lines[0] and reason in lines[0]


@pytest.mark.parametrize("opener", ["writer", "reader"])
def test_best_falls_back_to_the_next_best(tmp_path, caplog, opener):
  caplog.set_level(logging.WARNING, logger="genjax")
  d = tmp_path / "ckpt"
  _save_steps(d, {10: 0.6, 20: 0.5, 30: 0.7, 40: 0.3})  # best 40, then 20
  path = _largest_file(str(d / "40" / "state"))
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0x01  # one flipped bit is enough
  open(path, "wb").write(bytes(data))
  with _writer(d) if opener == "writer" else _reader(d) as c:
    assert c.resolve("best") == 40  # the listing cannot know until it reads the data
    state, meta = c.load(_state(0), "best")
    assert meta["step"] == 20 and meta["metrics"] == {METRIC: 0.5}
    assert_trees_equal(state, _state(20))
    assert c.resolve("best") == 20 and c.resolve("latest") == 30
  assert len(_warnings(caplog)) == 1
  assert (d / "40").exists() == (opener == "reader")


def test_flipped_bytes_are_caught_by_the_checksum_not_by_orbax(tmp_path):
  """Flipped bytes that Orbax itself restores without complaint are still refused."""
  d = tmp_path / "ckpt"
  _save_steps(d, {10: None})
  path = d / "10" / "meta" / "metadata"  # JSON meta: flip a digit of the data position
  text = path.read_text()
  assert "320" in text
  path.write_text(text.replace("320", "321"))
  import orbax.checkpoint as ocp

  meta = ocp.Checkpointer(ocp.CompositeCheckpointHandler()).restore(
    str(d / "10"), args=ocp.args.Composite(meta=ocp.args.JsonRestore())
  )["meta"]
  assert meta["data_position"] == 321  # Orbax alone loads the altered value
  with _reader(d) as r:
    with pytest.raises(CheckpointDamagedError, match=r"step 10 .*checksum: meta/metadata does not match"):
      r.load(_state(0), 10)
    with pytest.raises(NoCheckpointError):
      r.load(_state(0), "latest")


def test_every_checkpoint_damaged_leaves_nothing_usable(tmp_path):
  d = tmp_path / "ckpt"
  _save_steps(d, {10: None, 20: None})
  for step in (10, 20):
    os.remove(d / str(step) / MANIFEST)
  with _writer(d) as w:
    with pytest.raises(NoCheckpointError, match="no checkpoint in"):
      w.load(_state(0), "latest")
  assert sorted(os.listdir(d / ckpt_lib.DAMAGED_DIR)) == ["10-no-manifest", "20-no-manifest"]


# --------------------------------------------------------------------------- several processes

_MULTI = """
import json, sys
import jax, jax.numpy as jnp, numpy as np, optax
from genjax import distributed
assert distributed.initialize_from_env()
from genjax.train.checkpoint import Checkpointer
from genjax.train.sharding import make_mesh, replicated
from genjax.train.state import create_train_state

mode, directory = sys.argv[1], sys.argv[2]
mesh = make_mesh(0)

def state(step):
  def make():
    params = {"w": jnp.arange(12.0).reshape(3, 4) + step, "b": jnp.full((4,), 0.5 * step)}
    s = create_train_state(params, {}, optax.adam(1e-3), jax.random.key(0))
    return s.replace(step=jnp.asarray(step, jnp.int32))
  return jax.jit(make, out_shardings=replicated(mesh))()

out = {}
if mode == "save":
  with Checkpointer(directory, keep=10, best_metric="test/loss") as w:
    for step in (1, 2, 3):
      w.save(state(step), data_position=32 * step, metrics={"test/loss": 10.0 - step})
    w.wait()
    out["after_wait"] = w.all_steps()
else:
  opener = Checkpointer.reader if mode == "read" else Checkpointer
  with opener(directory, best_metric="test/loss") as c:
    restored, meta = c.load(state(0), "latest")
    out["latest"], out["w"] = meta["step"], np.asarray(restored.params["w"]).tolist()
    out["steps"] = c.shared_steps()
    try:
      c.load(state(0), 3)
    except Exception as e:
      out["explicit"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""


def _two_processes(tmp_path, *args: str) -> list[dict]:
  script = tmp_path / "multi.py"
  script.write_text(_MULTI)
  env = child_env()
  p = subprocess.run(
    [
      sys.executable,
      "-m",
      "genjax.launch",
      "--processes=2",
      "--timeout=240",
      "--",
      sys.executable,
      str(script),
      *args,
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
  out = {}
  for line in p.stdout.splitlines():
    rank, _, payload = line.partition("] ")
    if payload.startswith("{"):
      out[int(rank.split()[-1])] = json.loads(payload)
  assert sorted(out) == [0, 1], p.stdout
  return [out[0], out[1]]


def test_two_processes_save_restore_and_pass_over_damage_together(tmp_path):
  """Two processes share one checkpoint directory: both write their shards, process 0 commits; after
  `wait()` both list every step; with the latest checkpoint damaged, readers in both processes fall
  back to the same step and leave it in place, and a writer in both has process 0 move it aside."""
  d = tmp_path / "ckpt"
  saved = _two_processes(tmp_path, "save", str(d))
  assert [r["after_wait"] for r in saved] == [[1, 2, 3], [1, 2, 3]]
  for step in (1, 2, 3):
    assert sorted(n for n in os.listdir(d / str(step) / "state") if n.startswith("ocdbt.process_")) == [
      "ocdbt.process_0",
      "ocdbt.process_1",
    ]
  assert sorted(os.listdir(d)) == [".writer.lock", "1", "2", "3"]
  with open(_largest_file(str(d / "3")), "r+b") as f:  # flip a byte of step 3
    first = f.read(1)
    f.seek(0)
    f.write(bytes([first[0] ^ 0xFF]))

  read = _two_processes(tmp_path, "read", str(d))
  want_w = (np.arange(12.0).reshape(3, 4) + 2).tolist()
  assert read[0] == read[1]
  assert read[0]["latest"] == 2 and read[0]["w"] == want_w and read[0]["steps"] == [1, 2]
  assert read[0]["explicit"].startswith("CheckpointDamagedError: checkpoint step 3 in ")
  assert "is damaged (checksum:" in read[0]["explicit"] and read[0]["explicit"].endswith(
    "complete checkpoints: [1, 2]"
  )
  assert sorted(os.listdir(d)) == [".writer.lock", "1", "2", "3"]  # readers leave it in place

  resumed = _two_processes(tmp_path, "write", str(d))
  assert resumed[0] == resumed[1]
  assert resumed[0]["latest"] == 2 and resumed[0]["w"] == want_w and resumed[0]["steps"] == [1, 2]
  assert resumed[0]["explicit"].startswith("NoCheckpointError: no checkpoint at step 3 in ")
  assert sorted(os.listdir(d)) == [".writer.lock", "1", "2", "damaged"]
  assert os.listdir(d / ckpt_lib.DAMAGED_DIR) == ["3-checksum"]


# --------------------------------------------------------------------------- readers


def test_reader_never_writes(tmp_path):
  d = tmp_path / "ckpt"
  _save_steps(d, {10: 0.9, 20: 0.5, 30: 0.7})
  # Things only a writer may clean up: an interrupted save, an empty step, a damaged step.
  os.makedirs(d / "40.pending.orbax-checkpoint-tmp" / "state")
  (d / "40.pending.orbax-checkpoint-tmp" / "state" / "junk").write_bytes(b"\0" * 10)
  os.makedirs(d / "50")
  os.remove(d / "30" / "state" / "_METADATA")
  before = _snapshot(d)

  def read_everything(directory):
    with _reader(directory) as r:
      assert r.all_steps() == [10, 20, 30]
      assert r.best_step() == 20 and r.read_meta(20)["data_position"] == 640
      assert r.load(_state(0), "latest")[1]["step"] == 20  # 30 is damaged
      assert r.load(_state(0), "best")[1]["step"] == 20
      with pytest.raises(CheckpointDamagedError):
        r.load(_state(0), 30)

  read_everything(d)
  assert _snapshot(d) == before
  with _read_only(d) as ro:  # and it works where nothing can be written at all
    read_everything(ro)
  assert _snapshot(d) == before

  missing = tmp_path / "no-such-dir"
  with _reader(missing) as r:
    assert r.all_steps() == [] and r.latest_step() is None
    with pytest.raises(NoCheckpointError, match="no checkpoint in .*train first"):
      r.load(_state(0))
  assert not missing.exists()


def test_reader_sees_a_checkpoint_once_complete_and_never_before(tmp_path, monkeypatch):
  d = tmp_path / "ckpt"
  release = threading.Event()
  real = ckpt_lib._write_manifest

  def slow_manifest(step_dir, step, meta):  # hold the save between Orbax's write and the commit
    assert release.wait(60)
    return real(step_dir, step, meta)

  monkeypatch.setattr(ckpt_lib, "_write_manifest", slow_manifest)
  w = _writer(d, async_save=True)
  r = _reader(d)
  try:
    assert r.all_steps() == []
    w.save(_state(10), 320, {METRIC: 1.0})
    for _ in range(600):  # Orbax finishes its part in the background, then the save waits before the commit
      if os.path.isdir(d / "10.pending"):
        break
      time.sleep(0.05)
    assert os.path.isdir(d / "10.pending") and os.listdir(d / "10.pending")
    assert r.all_steps() == [] and r.latest_step() is None
    with pytest.raises(NoCheckpointError):
      r.load(_state(0))
    release.set()
    w.wait()
    assert r.all_steps() == [10]  # the same reader, on its next listing
    assert_trees_equal(r.load(_state(0))[0], _state(10))
    w.save(_state(20), 640, None)
    w.wait()
    assert r.all_steps() == [10, 20]
  finally:
    release.set()
    w.close()
    r.close()


def test_readers_loop_while_a_writer_process_saves_and_prunes(tmp_path, caplog):
  """A reader polling 'latest' and 'best' while another process saves 20 steps with keep=2."""
  caplog.set_level(logging.WARNING, logger="genjax")
  d = tmp_path / "ckpt"
  driver = f"""
import sys
sys.path.insert(0, {REPO!r})
from tests.test_checkpoint import METRIC, _state, _writer
with _writer({str(d)!r}, keep=2, async_save=True) as w:
  print("open", flush=True)
  for step in range(1, 21):  # step 7 stays the best
    w.save(_state(step), step * 32, {{METRIC: 0.001 if step == 7 else 1.0 / step}})
"""
  writer = subprocess.Popen(
    [sys.executable, "-c", driver],
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  seen = {"latest": set(), "best": set()}
  try:
    assert writer.stdout.readline().strip() == "open"
    with _reader(d) as r:
      while writer.poll() is None or not seen["latest"]:
        for which in seen:
          try:
            state, meta = r.load(_state(0), which)
          except NoCheckpointError:
            assert not r.all_steps() or which == "best"
            continue
          assert_trees_equal(state, _state(meta["step"]))  # never a mix of two checkpoints
          seen[which].add(meta["step"])
      assert r.all_steps() == [7, 19, 20] and r.load(_state(0), "best")[1]["step"] == 7
  finally:
    _, err = writer.communicate(timeout=300)
  assert writer.returncode == 0, err[-3000:]
  assert len(seen["latest"]) > 1 and seen["best"] <= set(range(1, 8))
  assert not _warnings(caplog)  # nothing was taken for damage
  assert sorted(os.listdir(d)) == [".writer.lock", "19", "20", "7"]


# --------------------------------------------------------------------------- writer start-up, retention


def test_writer_removes_leftovers_at_start_synchronously_and_readers_never_do(tmp_path):
  d = tmp_path / "ckpt"
  _save_steps(d, {10: None})
  leftovers = [
    "20.orbax-checkpoint-tmp-1700000000",
    "20.pending",
    "20.pending.orbax-checkpoint-tmp",
    "30.deleting-123",
  ]
  for name in leftovers:
    os.makedirs(d / name / "state")
    (d / name / "state" / "junk").write_bytes(b"\0" * 10)
  with _reader(d) as r:
    assert r.all_steps() == [10]
  assert all((d / name).exists() for name in leftovers)
  w = _writer(d)
  try:
    assert not any((d / name).exists() for name in leftovers)  # gone before the first save
    assert w.all_steps() == [10]
    w.save(_state(20), 640, None)
    assert w.all_steps() == [10, 20]
  finally:
    w.close()


RETENTION_LOSSES = {5: 0.8, 10: 0.3, 15: 0.6, 20: 0.5, 25: 0.45, 30: 0.7, 35: 0.9, 40: 0.65}


@pytest.mark.parametrize("eval_every", [5, 10])
def test_retention_after_a_restart_keeps_what_a_straight_run_keeps(tmp_path, eval_every):
  """40 steps, a checkpoint every 5, keep=3: the best (step 10) survives a restart at step 20."""
  losses = {s: (v if s % eval_every == 0 else None) for s, v in RETENTION_LOSSES.items()}
  straight, restarted = tmp_path / "straight", tmp_path / "restarted"
  _save_steps(straight, losses, keep=3, async_save=True)
  _save_steps(restarted, {s: v for s, v in losses.items() if s <= 20}, keep=3, async_save=True)
  assert _reader(restarted).all_steps() == [10, 15, 20]
  _save_steps(restarted, {s: v for s, v in losses.items() if s > 20}, keep=3, async_save=True)
  kept = _reader(straight).all_steps()
  assert kept == [10, 30, 35, 40]
  assert _reader(restarted).all_steps() == kept
  assert _reader(restarted).resolve("best") == 10


def test_retention_drops_the_old_best_when_a_better_one_arrives(tmp_path):
  d = tmp_path / "ckpt"
  with _writer(d, keep=1) as w:
    for step, loss in [(1, 0.5), (2, 0.9), (3, 0.8), (4, 0.2), (5, 0.7)]:
      w.save(_state(step), step, {METRIC: loss})
  assert _reader(d).all_steps() == [4, 5]


# --------------------------------------------------------------------------- non-finite


def test_non_finite_state_is_never_saved(tmp_path):
  d = tmp_path / "ckpt"
  with _writer(d) as w:
    w.save(_state(10), 320, None)
    good = _state(20)
    bad = good.replace(
      params={**good.params, "scale": jnp.asarray(jnp.inf)},
      ema_params={
        **good.ema_params,
        "dense": {**good.ema_params["dense"], "bias": good.ema_params["dense"]["bias"] * jnp.nan},
      },
    )
    with pytest.raises(NonFiniteStateError) as e:
      w.save(bad, 640, None)
    assert e.value.leaves == [".params['scale']", ".ema_params['dense']['bias']"]
    assert e.value.last_saved == 10 and "\n" not in str(e.value)
    assert "refusing to save step 20: 2 leaves hold NaN or inf" in str(e.value) and "step 10" in str(e.value)
    assert w.all_steps() == [10]
  assert sorted(os.listdir(d)) == [".writer.lock", "10"]


def test_nonfinite_leaves_covers_optimizer_and_model_state_and_skips_integers():
  s = _state(3)
  mu = s.opt_state[0].mu
  s = s.replace(
    opt_state=(s.opt_state[0]._replace(mu={**mu, "scale": jnp.asarray(jnp.nan)}), *s.opt_state[1:]),
    model_state={**s.model_state, "stats": jnp.asarray([0.0, -jnp.inf, 1.0])},
  )
  assert nonfinite_leaves(s) == [".opt_state[0].mu['scale']", ".model_state['stats']"]
  assert nonfinite_leaves(_state(3)) == []
  assert nonfinite_leaves({"i": np.arange(3), "x": np.float32(np.nan), "y": 1.5}) == ["['x']"]


# --------------------------------------------------------------------------- full disk, unwritable directory


def _assert_write_error(error, d, step, last, code):
  message = str(error)
  assert "\n" not in message and str(d) in message and f"checkpoint step {step}" in message
  assert os.strerror(code) in message and "needs about" in message and "free there" in message
  assert f"(step {last}) is intact" in message
  assert error.errno == code and error.needed > 0 and error.last_saved == last


def test_full_disk_on_a_real_tmpfs(tmp_path):
  mnt = tmp_path / "fs"
  mnt.mkdir()
  if not _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)):
    pytest.skip("cannot mount a tmpfs here (needs root)")
  try:
    d = mnt / "ckpt"
    w = _writer(d, async_save=True)
    w.save(_state(1, width=4096), 32, None)  # about 0.6 MiB with the EMA and Adam moments
    w.wait()
    vfs = os.statvfs(mnt)
    with open(mnt / "filler", "wb") as f:  # leave 64 KiB
      f.write(b"\0" * (vfs.f_bavail * vfs.f_frsize - 64 * 1024))
    w.save(_state(2, width=4096), 64, None)  # fails in Orbax's background write
    with pytest.raises(CheckpointWriteError) as e:
      w.wait()
    _assert_write_error(e.value, d, 2, 1, errno.ENOSPC)
    assert e.value.free < e.value.needed
    w.wait()  # raised once
    leftovers = [n for n in os.listdir(d) if n.startswith("2.")]
    assert leftovers  # the half-written save is still there...
    with _reader(d) as r:  # ...the last complete checkpoint is usable...
      assert r.all_steps() == [1]
      assert_trees_equal(r.load(_state(0, width=4096))[0], _state(1, width=4096))
    assert all((d / n).exists() for n in leftovers)  # ...and a reader does not touch it
    w.close()
    assert not [n for n in os.listdir(d) if n.startswith("2.")]  # the writer removes it
    os.remove(mnt / "filler")
    with _writer(d) as w2:  # space again: the run continues
      w2.save(_state(2, width=4096), 64, None)
      assert w2.all_steps() == [1, 2]
  finally:
    _umount(mnt)


def test_write_errors_surfacing_anywhere_become_one_checkpoint_write_error(tmp_path, monkeypatch):
  d = tmp_path / "ckpt"
  w = _writer(d, async_save=True)
  w.save(_state(10), 320, None)
  w.wait()

  def no_space(step_dir, step, meta):
    raise OSError(errno.ENOSPC, "No space left on device", os.path.join(step_dir, "manifest.json.tmp"))

  monkeypatch.setattr(ckpt_lib, "_write_manifest", no_space)
  w.save(_state(20), 640, None)  # fails in the background thread
  with pytest.raises(CheckpointWriteError) as e:
    w.save(_state(30), 960, None)  # surfaces at the next save
  _assert_write_error(e.value, d, 20, 10, errno.ENOSPC)
  w.save(_state(30), 960, None)
  with pytest.raises(CheckpointWriteError) as e:
    w.close()  # and at close
  _assert_write_error(e.value, d, 30, 10, errno.ENOSPC)
  monkeypatch.undo()
  with _writer(d) as w2:  # close released the lock and cleaned up
    assert w2.all_steps() == [10] and sorted(os.listdir(d)) == [".writer.lock", "10"]

    def orbax_no_space(*args, **kwargs):  # as tensorstore reports it
      raise ValueError("RESOURCE_EXHAUSTED: Error writing ...: No space left on device [os_error_code='28']")

    monkeypatch.setattr(w2._ckptr, "save", orbax_no_space)
    with pytest.raises(CheckpointWriteError) as e:
      w2.save(_state(40), 1280, None)
    _assert_write_error(e.value, d, 40, 10, errno.ENOSPC)


def test_read_only_directory(tmp_path):
  d = tmp_path / "ckpt"
  _save_steps(d, {10: None})
  with _read_only(d):
    with pytest.raises(CheckpointWriteError, match=r"cannot write to checkpoint directory .*ckpt: ") as e:
      _writer(d)
    assert e.value.errno in (errno.EROFS, errno.EACCES)
    with _reader(d) as r:
      assert_trees_equal(r.load(_state(0))[0], _state(10))


def test_directory_becoming_unwritable_mid_run(tmp_path):
  d = tmp_path / "ckpt"
  w = _writer(d, async_save=True)
  try:
    w.save(_state(10), 320, None)
    w.wait()
    with _unwritable(d) as code:
      with pytest.raises(CheckpointWriteError) as e:
        w.save(_state(20), 640, None)  # the step directory cannot be created: fails at once
      _assert_write_error(e.value, d, 20, 10, code)
      with _reader(d) as r:
        assert_trees_equal(r.load(_state(0))[0], _state(10))
  finally:
    w.close()
  with _writer(d) as w2:
    assert w2.all_steps() == [10]


# --------------------------------------------------------------------------- locks


def test_one_writer_per_checkpoint_directory(tmp_path):
  d = tmp_path / "ckpt"
  w = _writer(d)
  try:
    with pytest.raises(
      wd.WorkdirBusyError, match=rf"checkpoint directory .* is in use by pid {os.getpid()} on host "
    ):
      _writer(d)
    with _reader(d) as r:  # readers need no lock
      assert r.all_steps() == []
  finally:
    w.close()
  _writer(d).close()


def test_second_trainer_refused_and_lock_released_by_kill_9(tmp_path):
  workdir = tmp_path / "run"
  holder = subprocess.Popen(
    [
      sys.executable,
      "-c",
      "import sys, time; from genjax.train import workdir as wd; lock = wd.lock_workdir(sys.argv[1]); "
      "print('locked', flush=True); time.sleep(600)",
      str(workdir),
    ],
    env=dict(os.environ, PYTHONPATH=REPO),
    stdout=subprocess.PIPE,
    text=True,
  )
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(wd.WorkdirBusyError) as e:
      wd.lock_workdir(str(workdir))
    message = str(e.value)
    assert f"pid {holder.pid} on host " in message and "running since 20" in message and "\n" not in message
    assert wd.lock_record(str(workdir))["pid"] == holder.pid
  finally:
    holder.kill()  # SIGKILL: no clean-up code runs
    holder.wait()
    holder.stdout.close()
  lock = wd.lock_workdir(str(workdir))  # the kernel released it
  try:
    assert wd.lock_record(str(workdir))["pid"] == os.getpid()
    with pytest.raises(wd.WorkdirBusyError, match=f"pid {os.getpid()}"):
      wd.lock_workdir(str(workdir))  # a second lock in the same process is refused too
  finally:
    lock.release()
  wd.lock_workdir(str(workdir)).release()


def test_workdir_paths_and_readers_create_nothing(tmp_path):
  afile = tmp_path / "file"
  afile.write_text("x")
  with pytest.raises(wd.WorkdirError, match=r"workdir .*file is a file; expected a directory"):
    wd.lock_workdir(str(afile))
  missing = tmp_path / "missing"
  assert wd.lock_record(str(missing)) is None and wd.load_saved_config(str(missing)) is None
  assert not missing.exists()


# --------------------------------------------------------------------------- config


def _config_json(**overrides) -> str:
  return tiny_config(**overrides).to_json_best_effort(indent=2, sort_keys=True)


def test_config_is_committed_once_atomically(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  assert wd.commit_config(str(workdir), _config_json())
  saved = wd.load_saved_config(str(workdir))
  assert saved["model"]["latent_dim"] == tiny_config().model.latent_dim
  assert not wd.commit_config(str(workdir), _config_json(**{"model.latent_dim": 99}))  # never overwritten
  assert wd.load_saved_config(str(workdir)) == saved
  assert wd.commit_config(str(workdir), _config_json(**{"seed": 7}), replace=True)
  assert wd.load_saved_config(str(workdir))["seed"] == 7
  assert sorted(os.listdir(workdir)) == ["config.json"]  # no temporary file left
  with pytest.raises(ValueError, match="config_json is not valid JSON"):
    wd.commit_config(str(workdir), "{", replace=True)
  (workdir / "config.json").write_text('{"seed": ')
  with pytest.raises(wd.ConfigFileError, match=r"config.json is not valid JSON"):
    wd.load_saved_config(str(workdir))


def test_check_resume_refuses_run_defining_keys_only():
  saved = json.loads(_config_json())
  allowed = {
    "train.num_steps": 400,
    "train.eval_every": 3,
    "train.log_every": 1,
    "train.checkpoint_every": 1,
    "train.progress_bar": True,
    "checkpoint.keep": 9,
    "eval.batch_size": 50,
    "num_devices": 4,
    "optim.schedule_steps": 100,
  }
  assert wd.check_resume(saved, tiny_config(**allowed)) == []
  assert set(wd.changed_keys(saved, tiny_config(**allowed))) == set(allowed)
  refused = {
    "model.latent_dim": 99,
    "seed": 3,
    "train.batch_size": 16,
    "data.name": "mnist_embedded",
    "optim.learning_rate": 0.5,
    "train.ema_decay": 0.5,
    "eval.use_ema": False,
  }
  new = tiny_config(**allowed, **refused)
  keys = wd.check_resume(saved, new)
  assert keys == sorted(refused)
  line = wd.format_changes(saved, new, keys)
  assert "\n" not in line and "seed: saved 0, now 3" in line and "model.latent_dim: saved " in line
  # A key the saved run did not have counts as differing.
  del saved["model"]["latent_dim"]
  assert wd.check_resume(saved, tiny_config()) == ["model.latent_dim"]
  assert "model.latent_dim: saved (absent), now " in wd.format_changes(saved, tiny_config(), ["model.latent_dim"])


def test_horizon_change_is_described():
  saved = json.loads(_config_json(**{"optim.schedule": "cosine", "train.num_steps": 20}))
  note = wd.horizon_change(saved, tiny_config(**{"optim.schedule": "cosine", "train.num_steps": 40}))
  assert "from 20 to 40 steps" in note and "--config.optim.schedule_steps=20" in note
  kept = tiny_config(**{"optim.schedule": "cosine", "train.num_steps": 40, "optim.schedule_steps": 20})
  assert wd.horizon_change(saved, kept) is None
  assert wd.horizon_change(json.loads(_config_json()), tiny_config(**{"train.num_steps": 40})) is None  # constant


def test_apply_saved_config_restores_the_run_and_keeps_explicit_overrides():
  saved = json.loads(_config_json(**{"model.hidden": (32, 16), "model.latent_dim": 3, "seed": 5}))
  config = wd.apply_saved_config(tiny_config(), saved, except_keys={"seed"})
  assert config.model.hidden == (32, 16) and isinstance(config.model.hidden, tuple)
  assert config.model.latent_dim == 3 and config.seed == tiny_config().seed
  assert wd.check_resume(saved, config) == ["seed"]
  saved["model"]["no_such_key"] = 1
  with pytest.raises(ValueError, match="the saved config has key 'model.no_such_key', which this config does not"):
    wd.apply_saved_config(tiny_config(), saved)


def test_config_from_saved_rebuilds_the_run_config():
  config = tiny_config(**{"model.hidden": (32, 16)})
  rebuilt = wd.config_from_saved(json.loads(config.to_json_best_effort()))
  assert wd.changed_keys(config, rebuilt) == []
  assert rebuilt.model.hidden == (32, 16) and isinstance(rebuilt.model.hidden, tuple)
  assert rebuilt.data.data_dir is None and rebuilt.train.num_steps == config.train.num_steps


# --------------------------------------------------------------------------- the real loop


def test_training_resumes_past_a_damaged_latest_checkpoint(tmp_path, caplog):
  from genjax.train import loop
  from genjax.train.experiment import Experiment
  from genjax.train.sharding import make_mesh

  caplog.set_level(logging.WARNING, logger="genjax")
  workdir = str(tmp_path / "run")
  config = tiny_config(**{"train.num_steps": 20})
  loop.train_and_evaluate(config, workdir, mesh=make_mesh(1))
  exp = Experiment(config, mesh=make_mesh(1))
  original, step = exp.restore(workdir, "latest")
  assert step == 20
  path = _largest_file(os.path.join(workdir, "checkpoints", "20", "state"))
  data = bytearray(open(path, "rb").read())
  data[len(data) // 3] ^= 0xFF
  open(path, "wb").write(bytes(data))
  assert exp.restore(workdir, "latest")[1] == 10  # a reader falls back
  loop.train_and_evaluate(config, workdir, mesh=make_mesh(1))  # resumes from 10, trains 10 steps again
  resumed, step = exp.restore(workdir, "latest")
  assert step == 20
  assert_trees_equal(resumed, original)
  assert os.listdir(os.path.join(workdir, "checkpoints", ckpt_lib.DAMAGED_DIR)) == ["20-checksum"]
  assert any("step 20" in line and "checksum" in line for line in _warnings(caplog))
