"""Multi-process training through the real command line: N `jax.distributed` processes on localhost.

`python -m genjax.launch --processes=N -- python -m experiments.train ...` (CPU backend, gloo
collectives), then resume, `experiments.evaluate` and `experiments.sample` the same way, compared
with one process that has as many devices: the final TrainState bit for bit, the evaluation
metrics exactly. Process 1's file writes are recorded by an audit hook (tests/write_audit) to show
that only process 0 writes the run's files. The in-process tests check the pieces the runs rest on:
the per-process batch slices and the mesh's device order.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from genjax import data, distributed
from genjax.train import sharding
from tests.helpers import REPO, child_env, tiny_config

AUDIT = os.path.join(REPO, "tests", "write_audit")
JAX_CACHE = os.path.join(REPO, ".pytest_cache", "jax-cache")


def _env(**extra: str) -> dict[str, str]:
  env = child_env(PYTHONPATH=os.pathsep.join([REPO, AUDIT]), JAX_COMPILATION_CACHE_DIR=JAX_CACHE)
  for var in ("GENJAX_COORDINATOR_ADDRESS", "GENJAX_NUM_PROCESSES", "GENJAX_PROCESS_ID", "JAX_NUM_CPU_DEVICES"):
    env.pop(var, None)
  env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
  env.update(extra)
  return env


def _launch(
  processes: int, module: str, *args: str, env: dict, timeout: float = 600
) -> subprocess.CompletedProcess:
  command = [sys.executable, "-m", "genjax.launch", f"--processes={processes}", f"--timeout={timeout - 30:g}"]
  command += ["--", sys.executable, "-m", module, *args]
  p = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
  assert p.returncode == 0, (
    f"{module} {' '.join(args)} failed ({p.returncode}):\n{p.stdout[-3000:]}{p.stderr[-6000:]}"
  )
  return p


def _rank_lines(text: str) -> dict[int, list[str]]:
  out = collections.defaultdict(list)
  for line in text.splitlines():
    m = re.match(r"\[rank (\d+)\] (.*)$", line)
    if m:
      out[int(m.group(1))].append(m.group(2))
  return out


def _audited_writes(audit_dir, process: str) -> list[str]:
  """Every write-like event process `process` ('0', '1', ...) made under the audited workdir."""
  lines = []
  for path in glob.glob(os.path.join(audit_dir, f"w.{process}.*")):
    with open(path) as f:
      lines += f.read().splitlines()
  return lines


# Orbax's own part of a save: every process writes its shards (and their metadata) inside the
# checkpoint's temporary directory; nothing else may be written by a process other than 0.
_ORBAX_PART = re.compile(r"^\w+ checkpoints/\d+\.pending\.orbax-checkpoint-tmp/state\.orbax-checkpoint-tmp/")


def _reference(config, num_devices: int, steps: int):
  """One process, `num_devices` of this test process's 4 CPU devices, `steps` steps: the state to match."""
  from genjax.train.experiment import Experiment

  exp = Experiment(config, mesh=sharding.make_mesh(num_devices))
  state, step, batches = exp.init_state(), exp.train_step(), exp.batch_iterator()
  try:
    for _ in range(steps):
      state, _ = step(state, exp.shard(next(batches)))
  finally:
    batches.close()
  return exp, state


def _assert_trees_close(a, b, rtol: float, atol: float) -> float:
  """Same structure, shapes and dtypes, values within `atol + rtol * |b|`; returns the largest |a - b|."""
  la, ta = jax.tree.flatten(a)
  lb, tb = jax.tree.flatten(b)
  assert ta == tb, f"tree structures differ: {ta} vs {tb}"
  worst = 0.0
  for i, (x, y) in enumerate(zip(la, lb, strict=True)):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape, f"leaf {i}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}"
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=f"leaf {i}")
    if x.size:
      worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))))
  return worst


def _eval_json(p: subprocess.CompletedProcess, processes: int) -> dict:
  """The evaluation JSON every rank printed: the same line on every rank."""
  lines = _rank_lines(p.stdout)
  printed = {rank: [x for x in lines[rank] if x.startswith("{")][-1] for rank in range(processes)}
  assert len(set(printed.values())) == 1, printed
  return json.loads(printed[0])


# --------------------------------------------------------------------------- in-process


@pytest.mark.parametrize("processes", [2, 4])
def test_process_slices_are_disjoint_and_cover_every_global_batch(processes):
  """Each process's rows of a global batch are its own, and together they are the one-process batch, in order."""
  n, batch = 37, 8  # batches straddle epochs
  source = data.ArraySource({"i": np.arange(n)})
  whole = data.BatchIterator(source, batch, seed=5, prefetch=0)
  parts = [
    data.BatchIterator(source, batch, seed=5, process_index=i, process_count=processes, prefetch=0)
    for i in range(processes)
  ]
  for position in range(0, 12 * batch, batch):  # 96 stream positions: 2.6 epochs
    rows = [p.indices_at(position) for p in parts]
    assert all(len(r) == batch // processes for r in rows)
    np.testing.assert_array_equal(np.concatenate(rows), whole.indices_at(position))
    stream = position + np.arange(batch)
    assert len(set(zip(stream // n, np.concatenate(rows), strict=True))) == batch  # disjoint within the batch
  resumed = data.BatchIterator(source, batch, seed=5, position=40, process_index=1, process_count=processes)
  np.testing.assert_array_equal(next(resumed)["i"], parts[1].indices_at(40))
  for it in [whole, resumed, *parts]:
    it.close()
  # Evaluation: every example exactly once over all processes and batches; padding masked.
  seen = collections.Counter()
  for i in range(processes):
    for b, mask in data.eval_batches(source, 12, i, processes):
      seen.update(b["i"][mask == 1].tolist())
  assert seen == collections.Counter(range(n))


class _Device:
  def __init__(self, id: int, process_index: int):
    self.id, self.process_index, self.platform = id, process_index, "cpu"

  def __repr__(self):
    return f"d{self.id}@p{self.process_index}"


def test_mesh_orders_devices_by_process_and_num_devices_counts_every_process():
  """Process i's devices are block i of the mesh, so its batch rows land on its own devices."""
  # Interleaved over processes, as a TPU slice may list them; within a process JAX's order is kept.
  devices = [_Device(i * 2048 + j, i) for j in (1, 0) for i in (2, 0, 1)]
  mesh = sharding.mesh_devices(0, devices)
  assert [d.process_index for d in mesh] == [0, 0, 1, 1, 2, 2]
  assert [d.id for d in mesh] == [1, 0, 2049, 2048, 4097, 4096]
  # With the batch split over the mesh in order, process i's devices hold rows [i*B/P, (i+1)*B/P):
  # exactly the rows BatchIterator gives it.
  global_batch, per_device = 12, 2
  for i in range(3):
    positions = [k for k, d in enumerate(mesh) if d.process_index == i]
    rows = np.concatenate([np.arange(k * per_device, (k + 1) * per_device) for k in positions])
    np.testing.assert_array_equal(rows, np.arange(i * global_batch // 3, (i + 1) * global_batch // 3))
  assert [d.id for d in sharding.mesh_devices(3, devices)] == [1, 2049, 4097]  # the first of each process
  for bad, message in [
    (
      4,
      r"num_devices=4 is not valid with 6 cpu device\(s\) in 3 processes: expected 0 \(all\) or a multiple of 3",
    ),
    (9, "num_devices=9 is not valid"),
    (-1, "num_devices=-1 is not valid"),
  ]:
    with pytest.raises(ValueError, match=message):
      sharding.mesh_devices(bad, devices)
  with pytest.raises(ValueError, match="process 0: 1, process 1: 2, process 2: 1"):
    sharding.mesh_devices(0, [_Device(0, 0), _Device(2048, 1), _Device(2049, 1), _Device(4096, 2)])
  with pytest.raises(ValueError, match=r"num_devices=3 but 2 cpu device\(s\) are available"):
    sharding.mesh_devices(3, [_Device(0, 0), _Device(1, 0)])


def test_collective_helpers_with_one_process():
  assert distributed.broadcast_json({"a": (1, 2)}) == {"a": [1, 2]}
  assert distributed.gather_json(3) == [3]
  distributed.agree(None, "doing nothing")
  with pytest.raises(KeyError, match="mine"):
    distributed.agree(KeyError("mine"), "failing")
  tree = {"x": np.ones(2), "n": 3}
  assert distributed.to_host(tree)["n"] == 3


def test_compare_states_reports_every_kind_of_difference():
  from genjax.cli import compare

  a = {"w": np.arange(4.0, dtype=np.float32), "key": jax.random.key(0), "n": np.int32(3)}
  assert compare.compare_states(a, dict(a))["equal"]
  b = {**a, "w": a["w"] + np.float32(1e-6)}
  near = compare.compare_states(a, b)
  assert not near["equal"] and near["differing"] == ["['w']"] and 0 < near["max_abs_diff"] < 2e-6
  assert compare.compare_states(a, b, atol=1e-5)["equal"]
  assert not compare.compare_states(a, {**a, "key": jax.random.key(1)})["equal"]
  assert compare.compare_states(a, {**a, "w": a["w"][:3]})["differing"] == ["['w']"]
  assert not compare.compare_states(a, {"w": a["w"]})["same_structure"]


# --------------------------------------------------------------------------- 2 processes


def test_two_processes_train_resume_evaluate_sample_like_one_process(tmp_path, capsys):
  """2 processes x 1 device through the command line == 1 process x 2 devices, bit for bit.

  Train 4 steps, resume to 8 (checkpoints every 2), evaluate and sample, all with 2 processes.
  The final TrainState equals a straight 8-step run of the trainer in one process with 2 devices,
  leaf for leaf (`genjax.cli.compare`: the same global batches in the same row order, since the
  VAE draws its noise per row, so a missing, repeated or moved row would change the parameters);
  both ranks print the same evaluation JSON, equal to the one-process evaluation, which scores
  every test example once; only process 0 writes the run's files.
  """
  from genjax.cli import compare
  from genjax.train import loop
  from genjax.train.experiment import Experiment

  work, one, audit = tmp_path / "run", tmp_path / "one", tmp_path / "audit"
  audit.mkdir()
  env = _env(GENJAX_AUDIT_ROOT=str(work), GENJAX_AUDIT_LOG=str(audit / "w"))
  intervals = {"checkpoint_every": 2, "log_every": 2, "eval_every": 4, "sample_every": 4}
  args = ["--config=configs/vae.py:tiny", f"--workdir={work}"]
  args += [f"--config.train.{k}={v}" for k, v in intervals.items()]
  t0 = time.monotonic()
  _launch(2, "experiments.train", *args, "--config.train.num_steps=4", env=env)
  resumed = _launch(2, "experiments.train", *args, "--config.train.num_steps=8", env=env)
  for rank in (0, 1):
    assert any("resuming from step 4 (data position 128)" in x for x in _rank_lines(resumed.stderr)[rank])
  evaluated = _launch(2, "experiments.evaluate", f"--workdir={work}", env=env)
  sampled = _launch(2, "experiments.sample", f"--workdir={work}", "--num=16", env=env)
  elapsed = time.monotonic() - t0

  # The run's final state and evaluation == the trainer in one process with as many devices (2).
  config = tiny_config(**{"train.num_steps": 8, **{f"train.{k}": v for k, v in intervals.items()}})
  loop.train_and_evaluate(config, str(one), mesh=sharding.make_mesh(2))
  capsys.readouterr()
  with pytest.raises(SystemExit) as status:
    compare.main([str(work), str(one)])
  verdict = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert status.value.code == 0 and verdict["equal"] and verdict["max_abs_diff"] == 0.0, verdict
  assert verdict["a"]["step"] == verdict["b"]["step"] == 8 and verdict["leaves"] > 40
  exp = Experiment(config, mesh=sharding.make_mesh(2))
  state, _ = exp.restore(str(one))
  plan = exp.family.final_evaluation()
  metrics = exp.evaluate(exp.eval_params(state), state.model_state, evaluation=plan)
  result = _eval_json(evaluated, 2)
  assert result["processes"] == 2 and result["num_examples"] == len(exp.evaluation_source("test", plan))
  assert {k: result[k] for k in metrics} == metrics  # exact: the same examples, each once, the same sums

  # Only process 0 wrote the run's files; process 1 only its own shards of each checkpoint.
  png = str(work / "samples" / "samples_step_8.png")
  # (the two ranks' lines arrive in either order)
  assert sorted(x for x in sampled.stdout.splitlines() if x.endswith(".png")) == [
    f"[rank 0] {png}",
    f"[rank 1] {png}",
  ]
  mine = _audited_writes(audit, "1")
  assert mine and all(_ORBAX_PART.match(x) for x in mine), [x for x in mine if not _ORBAX_PART.match(x)]
  chief = set(_audited_writes(audit, "0"))
  for written in [
    "open .lock",
    "open checkpoints/.writer.lock",
    "rename config.json",
    "open metrics.jsonl",
    "rename checkpoints/8.pending/manifest.json",
    "rename checkpoints/8",
    "rename samples/step_0000008.png",
    "rename samples/samples_step_8.png",
    "rename eval/step_8_test.json",
  ]:
    assert written in chief, (written, sorted(chief))
  assert len(glob.glob(str(work / "tensorboard" / "events.out.tfevents.*"))) == 2  # one writer per launch
  with open(work / "metrics.jsonl") as f:
    logged = [(r["step"], r["split"]) for r in map(json.loads, f)]
  assert len(logged) == len(set(logged)) == 6, logged  # train at 2, 4, 6, 8 and test at 4, 8: each once
  assert sorted(os.listdir(work / "checkpoints")) == [".writer.lock", "4", "6", "8"]
  with capsys.disabled():
    print(f"\n2-process train + resume + evaluate + sample: {elapsed:.1f} s")


def test_an_error_on_one_process_stops_every_process_with_its_message(tmp_path):
  """Process 1 cannot see process 0's checkpoint directory (a workdir on each host's own disk):
  both processes stop at once with status 1, each printing one `error:` line that names the problem."""
  env = _env()
  script = (
    f"exec {sys.executable} -m experiments.train --config=configs/vae.py:tiny "
    f"--workdir={tmp_path}/host$GENJAX_PROCESS_ID"
  )
  t0 = time.monotonic()
  p = subprocess.run(
    [sys.executable, "-m", "genjax.launch", "--processes=2", "--timeout=240", "--", "bash", "-c", script],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  elapsed = time.monotonic() - t0
  assert p.returncode == 1, p.stdout + p.stderr
  errors = {rank: [x for x in lines if x.startswith("error:")] for rank, lines in _rank_lines(p.stderr).items()}
  assert len(errors[1]) == 1 and "process 1 does not see the checkpoint directory" in errors[1][0], p.stderr
  assert "shared filesystem" in errors[1][0]
  assert errors[0] == [
    f"error: process 1 of 2 failed opening checkpoint directory {tmp_path}/host0/checkpoints: "
    f"CheckpointError: {errors[1][0][len('error: ') :]}"
  ], p.stderr
  assert "genjax.launch: rank 1 exited with status 1" in p.stderr or "rank 0 exited with status 1" in p.stderr
  assert "Traceback" not in p.stderr
  assert elapsed < 120, elapsed


# --------------------------------------------------------------------------- 4 processes, every family


def _families() -> list[tuple[str, str]]:
  """(config, preset) of a tiny config of every family; flow matching once its config ships."""
  out = [
    ("vae", "tiny"),  # autoencoder
    ("pixelcnn", "tiny"),
    ("gan", "tiny"),  # the two-player step
    ("realnvp", "tiny"),
    ("ddpm", "tiny"),
  ]
  if os.path.exists(os.path.join(REPO, "genjax", "configs", "flow_matching.py")):
    out.append(("flow_matching", "tiny"))
  return out


def _kill_when(launcher: subprocess.Popen, path: str, timeout: float) -> None:
  """SIGKILLs one rank (process 1) of `launcher` as soon as `path` exists; the launcher stops the rest."""
  deadline = time.monotonic() + timeout
  while not os.path.exists(path):
    assert launcher.poll() is None, "the run ended before it could be killed"
    assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
    time.sleep(0.05)
  ranks = _children(launcher.pid)
  assert len(ranks) == 4, ranks
  os.kill(ranks[1], signal.SIGKILL)


def _children(pid: int) -> list[int]:
  with open(f"/proc/{pid}/task/{pid}/children") as f:
    return [int(x) for x in f.read().split()]


@pytest.mark.slow
@pytest.mark.parametrize("name,preset", _families())
def test_four_processes_every_family_killed_resumed_like_one_process(tmp_path, name, preset):
  """4 processes x 1 device per family: train with checkpoints every 2 steps, SIGKILL process 1 once
  step 4 is saved, resume to 4 steps past the last complete checkpoint, evaluate and sample with 4
  processes. The final state equals 1 process x 4 devices to float tolerance (rtol 1e-4; the
  cross-process sum of gradients is ordered differently), the printed evaluation JSON is the same on
  every rank and equal to the one-process evaluation to the same tolerance, the sample statistics
  too, and only process 0 wrote the run's files."""
  from genjax.train.experiment import Experiment

  work, audit = tmp_path / "run", tmp_path / "audit"
  audit.mkdir()
  env = _env(GENJAX_AUDIT_ROOT=str(work), GENJAX_AUDIT_LOG=str(audit / "w"))
  horizon = 1000  # a fixed schedule horizon, so that changing num_steps on resume changes nothing else
  args = [f"--config=configs/{name}.py:{preset}", f"--workdir={work}", f"--config.optim.schedule_steps={horizon}"]
  args += ["--config.train.checkpoint_every=2", "--config.train.log_every=2", "--config.train.eval_every=0"]
  args += ["--config.train.sample_every=0", "--config.train.tensorboard=False"]
  command = [sys.executable, "-m", "genjax.launch", "--processes=4", "--timeout=900", "--"]
  command += [sys.executable, "-m", "experiments.train", *args, f"--config.train.num_steps={horizon}"]
  t0 = time.monotonic()
  launcher = subprocess.Popen(
    command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
  )
  try:
    _kill_when(launcher, str(work / "checkpoints" / "4"), timeout=840)
    out, err = launcher.communicate(timeout=60)
  finally:
    launcher.kill()
  assert launcher.returncode == 137 and "rank 1 was killed by SIGKILL" in err, err[-3000:]
  reader = Experiment(tiny_config(name, preset), mesh=sharding.make_mesh(4)).checkpoint_reader(str(work))
  last = reader.latest_step()
  assert last is not None and last >= 4
  final = last + 4
  resumed = _launch(4, "experiments.train", *args, f"--config.train.num_steps={final}", env=env, timeout=900)
  for rank in range(4):
    assert any(f"resuming from step {last} " in x for x in _rank_lines(resumed.stderr)[rank]), resumed.stderr[
      -3000:
    ]
  evaluated = _launch(4, "experiments.evaluate", f"--workdir={work}", env=env, timeout=900)
  sampled = _launch(4, "experiments.sample", f"--workdir={work}", "--num=16", env=env, timeout=900)
  elapsed = time.monotonic() - t0

  config = tiny_config(name, preset, **{"optim.schedule_steps": horizon, "train.num_steps": final})
  exp, want = _reference(config, 4, final)
  got, step = Experiment(config, mesh=sharding.make_mesh(4)).restore(str(work))
  assert step == final
  # Not bit for bit: gloo sums the 4 processes' gradients in another order than XLA sums 4 devices
  # of one process (with 2 the order does not matter, a + b = b + a; see the 2-process test).
  worst = _assert_trees_close(got, want, rtol=1e-4, atol=1e-6)
  result = _eval_json(evaluated, 4)
  plan = exp.family.final_evaluation()
  metrics = exp.evaluate(exp.eval_params(want), want.model_state, evaluation=plan)
  assert {k: result[k] for k in metrics} == pytest.approx(metrics, rel=1e-4, abs=1e-6)
  if "frechet_distance" in result or "energy_distance" in result:  # the config's default sample statistics
    from genjax.eval.sample_metrics import SampleStatistics, feature_network, sample_statistics

    images = exp.family.images
    num = exp.run.eval.frechet_samples if images else exp.run.eval.toy_samples
    features, info = feature_network(exp.run.eval, exp.info, exp.splits) if images else (None, {})
    options = SampleStatistics(num, jax.random.fold_in(exp.sample_key(), 1), features, info)
    stats = sample_statistics(exp.family, exp.eval_params(want), want.model_state, exp.splits, options)
    for k, v in stats.items():
      if isinstance(v, float):
        assert result[k] == pytest.approx(v, rel=1e-3, abs=1e-6), k
  png = str(work / "samples" / f"samples_step_{final}.png")
  assert os.path.exists(png) and sampled.stdout.count(png) == 4
  for rank in ("1", "2", "3"):
    mine = _audited_writes(audit, rank)
    assert all(_ORBAX_PART.match(x) for x in mine), [x for x in mine if not _ORBAX_PART.match(x)]
  print(f"\n{name}: 4-process train + kill + resume + evaluate + sample {elapsed:.1f} s; max |diff| {worst:.3g}")
