"""Run safety through the real command line (issue 15): readers beside a running trainer, one trainer
per workdir, damaged checkpoints, non-finite updates, edited configs, the saved config as the truth,
and every bad input a one-line error with exit status 2.

The checkpoint layer itself (every damage kind, retention, full disks, the lock) is tested in
`tests/test_checkpoint.py`; these tests drive `experiments.train/evaluate/sample` as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from genjax.train import loop
from genjax.train.experiment import Experiment
from genjax.train.sharding import make_mesh
from tests.helpers import REPO, assert_trees_equal, child_env, run_cli_cases, run_module, tiny_config

CFG = "--config=configs/vae.py:tiny"


def _one_line_error(p: subprocess.CompletedProcess, status: int = 2) -> str:
  lines = p.stderr.strip().splitlines()
  assert p.returncode == status, (p.returncode, p.stderr[-2000:])
  assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr[-2000:]
  return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A 20-step tiny VAE run (checkpoints 10 and 20), trained in-process."""
  workdir = str(tmp_path_factory.mktemp("trained") / "run")
  loop.train_and_evaluate(tiny_config(), workdir, mesh=make_mesh(1))
  return workdir


BAD_INPUTS = [
  (["--config.train.num_steps=-3"], "train.num_steps=-3 is not valid: expected an integer >= 0"),
  (["--config.train.batch_size=0"], "train.batch_size=0 is not valid"),
  (["--config.train.checkpoint_every=-1"], "train.checkpoint_every=-1 is not valid"),
  (["--config.train.log_every=0"], "train.log_every=0 is not valid"),
  (["--config.checkpoint.keep=0"], "checkpoint.keep=0 is not valid"),
  (["--config.data.name=nope"], "'nope'"),
  (["--config.model.family=nope"], "model.family='nope' is not a registered family"),
  (["--config.optim.name=adamax"], "optim.name='adamax' is not valid: expected one of 'adam'"),
  (["--config.model.variant=vea"], "model.variant='vea' is not valid"),
  (["--config.model.hidden=abc"], "model.hidden"),
  (["--config.sampling.temperature=-1"], "sampling.temperature=-1.0 is not valid"),
  (["--config.sampling.temperature=nan"], "sampling.temperature=nan is not valid"),
  (["--config.train.num_stepz=5"], "unknown config key"),
  (["--config.train.num_steps=many"], "num_steps"),
]


def test_bad_config_values_are_one_line_errors_with_status_2(tmp_path):
  cases = [[CFG, f"--workdir={tmp_path}/run", *overrides] for overrides, _ in BAD_INPUTS]
  for p, (_, message) in zip(run_cli_cases("genjax.cli.train", cases), BAD_INPUTS, strict=True):
    assert message in _one_line_error(p), (p.args, p.stderr)
  assert not os.path.exists(tmp_path / "run" / "config.json")  # a failed start writes no config
  # The same through a real process of its own, for one case: nothing else reaches stderr.
  p = run_module("experiments.train", CFG, f"--workdir={tmp_path}/run", "--config.train.num_steps=-3")
  assert "train.num_steps=-3" in _one_line_error(p)


def test_bad_files_presets_flags_and_workdirs_are_one_line_errors(tmp_path, trained):
  afile = tmp_path / "afile"
  afile.write_text("x")
  cases = {
    "genjax.cli.train": [
      (["--config=configs/nope.py", f"--workdir={tmp_path}/a"], "no such file"),
      (["--config=configs/vae.py:huge", f"--workdir={tmp_path}/a"], "unknown preset 'huge'"),
      ([CFG, f"--workdir={afile}"], str(afile)),
      ([CFG], "--workdir is required"),
      (
        ["--config=configs/ddpm.py:tiny", f"--workdir={tmp_path}/a", "--config.sampling.ddim_steps=0"],
        "sampling.ddim_steps=0 is not valid",
      ),
    ],
    "genjax.cli.evaluate": [
      ([f"--workdir={trained}", "--checkpoint=abc"], "--checkpoint"),
      ([f"--workdir={trained}", "--split=validation"], "--split=validation is not valid"),
      ([f"--workdir={trained}", "--sample_stats=-1"], "--sample_stats=-1 is not valid"),
      ([f"--workdir={tmp_path}/never"], "no config.json"),
    ],
    "genjax.cli.sample": [
      ([f"--workdir={trained}", "--kind=movie"], "--kind=movie is not a figure"),
      ([f"--workdir={trained}", "--num=0"], "num=0 is not valid"),
      ([f"--workdir={trained}", "--guidance=2"], "--guidance: this model has no sampling.guidance"),
    ],
  }
  for module, module_cases in cases.items():
    results = run_cli_cases(module, [args for args, _ in module_cases])
    for p, (args, message) in zip(results, module_cases, strict=True):
      assert message in _one_line_error(p), (module, args, p.stderr)


def test_readers_use_the_saved_config_and_never_write(trained, tmp_path):
  before = {
    os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns for d, _, fs in os.walk(trained) for f in fs
  }
  # No --config: the saved one, with an override on top (the override flags exist before they are read).
  p = run_module(
    "experiments.evaluate",
    "--config.eval.batch_size=64",
    f"--workdir={trained}",
    "--checkpoint=best",
    "--sample_stats=0",
  )
  assert p.returncode == 0, p.stderr[-2000:]
  result = json.loads(p.stdout.strip().splitlines()[-1])
  assert result["family"] == "autoencoder" and result["num_examples"] > 100
  # --config of another preset: the saved run's values win, explicit overrides win over both.
  out = str(tmp_path / "s.png")
  p = run_module(
    "experiments.sample", "--config=configs/vae.py:tiny,conv", f"--workdir={trained}", "--num=4", f"--out={out}"
  )
  assert p.returncode == 0, p.stderr[-2000:]
  after = {
    os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns for d, _, fs in os.walk(trained) for f in fs
  }
  changed = {k for k in after if before.get(k) != after[k]}
  # Only the evaluation's own output appears; checkpoints, config.json and metrics are untouched.
  assert all("/eval/" in k for k in changed), changed


def test_resume_with_an_edited_config_is_refused_with_its_diff(trained):
  for override, key in (
    ("--config.model.latent_dim=8", "model.latent_dim: saved 4, now 8"),
    ("--config.seed=3", "seed"),
  ):
    p = run_module("experiments.train", CFG, f"--workdir={trained}", override, "--config.train.num_steps=30")
    assert key in _one_line_error(p)
  with open(os.path.join(trained, "config.json")) as f:
    assert json.load(f)["model"]["latent_dim"] == 4  # never overwritten by the failed start


def test_a_non_finite_update_is_never_saved(tmp_path):
  """lr = 1e39 makes the loss of step 1 finite but every parameter inf after the update."""
  workdir = str(tmp_path / "inf")
  p = run_module(
    "experiments.train",
    CFG,
    f"--workdir={workdir}",
    "--config.optim.learning_rate=1e39",
    "--config.train.checkpoint_every=1",
  )
  assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
  line = p.stderr.strip().splitlines()[-1]  # after the run's own log lines
  assert line.startswith("error: refusing to save step 1") and "no checkpoint was saved" in line, line
  assert not [d for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()]


def test_a_damaged_latest_checkpoint_falls_back_for_train_and_evaluate(tmp_path):
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(tiny_config(), workdir, mesh=make_mesh(1))  # checkpoints 10 and 20
  with open(os.path.join(workdir, "checkpoints", "20", "state", "_METADATA"), "r+b") as f:
    f.truncate(5)
  for which in ("latest", "best"):
    p = run_module("experiments.evaluate", f"--workdir={workdir}", f"--checkpoint={which}", "--sample_stats=0")
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout.strip().splitlines()[-1])["step"] == 10
    warnings = [line for line in p.stderr.splitlines() if "step 20" in line and "damaged" in line]
    assert len(warnings) == 1, p.stderr
  p = run_module("experiments.train", CFG, f"--workdir={workdir}", "--config.train.num_steps=20")
  assert p.returncode == 0 and "resuming from step 10" in p.stderr, p.stderr[-2000:]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints", "damaged")))[0].startswith("20-")


def test_evaluate_and_sample_while_the_run_trains(tmp_path):
  """Readers beside a trainer that saves every step: all succeed, and the run ends as one without readers."""
  workdir, straight = str(tmp_path / "busy"), str(tmp_path / "straight")
  # Long enough to outlast three reader processes on a loaded 2-core machine (saving every step).
  args = [CFG, "--config.train.num_steps=200", "--config.train.checkpoint_every=1", "--config.train.eval_every=20"]
  env = child_env()
  trainer = subprocess.Popen(
    [sys.executable, "-m", "experiments.train", *args, f"--workdir={workdir}"],
    cwd=REPO,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(workdir, "checkpoints", "2")) and time.time() < deadline:
      time.sleep(0.2)
    calls = [
      ("experiments.evaluate", f"--workdir={workdir}", "--sample_stats=0"),
      ("experiments.sample", f"--workdir={workdir}", "--num=4", f"--out={tmp_path}/a.png"),
      ("experiments.evaluate", f"--workdir={workdir}", "--checkpoint=best", "--sample_stats=0"),
    ]
    for call in calls:
      p = run_module(*call)
      assert p.returncode == 0, p.stderr[-2000:]
    during = trainer.poll() is None
    _, err = trainer.communicate(timeout=300)
  finally:
    trainer.kill()
  assert trainer.returncode == 0, err[-3000:]
  assert during, "the trainer finished before the readers were done; make its run longer"
  # The straight run saves only at the end: how often a run saves does not change its numbers.
  config = tiny_config(**{"train.num_steps": 200, "train.checkpoint_every": 200, "train.eval_every": 20})
  loop.train_and_evaluate(config, straight, mesh=make_mesh(1))
  exp = Experiment(config, mesh=make_mesh(1))
  a, b = exp.restore(workdir, "latest")[0], exp.restore(straight, "latest")[0]
  assert int(a.step) == 200
  assert_trees_equal(jax.device_get(a), jax.device_get(b))
  assert np.isfinite(np.asarray(jax.tree.leaves(a.params)[0])).all()


def test_a_second_trainer_on_a_busy_workdir_stops_at_once(tmp_path):
  workdir = str(tmp_path / "busy")
  env = child_env()
  first = subprocess.Popen(
    [sys.executable, "-m", "experiments.train", CFG, f"--workdir={workdir}", "--config.train.num_steps=100000"],
    cwd=REPO,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  try:
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(workdir, "config.json")) and time.time() < deadline:
      time.sleep(0.2)
    p = run_module("experiments.train", CFG, f"--workdir={workdir}")
    line = _one_line_error(p, status=1)
    assert f"pid {first.pid}" in line, line
  finally:
    first.kill()
    first.wait()


def test_tensorboard_events_failing_on_a_full_disk_are_one_warning(tmp_path, caplog):
  """The trainer closes its TensorBoard writer in a `finally`: when its last events cannot be
  written (a full disk), that is one warning, never an exception replacing the run's own error."""
  from genjax.train.metric_writer import MetricWriter

  class FullDisk:
    calls = 0

    def flush(self):
      FullDisk.calls += 1
      raise OSError(28, "No space left on device")

    close = flush

  writer = MetricWriter(str(tmp_path), enable_tensorboard=False)
  writer._tb = FullDisk()
  with caplog.at_level("WARNING", logger="genjax"):
    writer.flush()
    writer.close()
    writer.close()  # closed: nothing more to do
  assert FullDisk.calls == 2
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert len(warnings) == 1 and "No space left on device" in warnings[0] and str(tmp_path) in warnings[0]


def test_a_full_disk_stops_the_run_in_one_line(tmp_path):
  """A 512 KiB tmpfs as the workdir: the run stops naming the directory and the space needed."""
  import shutil

  disk = tmp_path / "disk"
  disk.mkdir()
  if os.geteuid() != 0 or not shutil.which("mount"):
    pytest.skip("mounting a small tmpfs needs root (tests/test_checkpoint.py simulates ENOSPC without it)")
  if subprocess.run(
    ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)], capture_output=True
  ).returncode:
    pytest.skip("cannot mount a tmpfs here")
  try:
    workdir = str(disk / "run")
    p = run_module(
      "experiments.train",
      CFG,
      f"--workdir={workdir}",
      "--config.train.checkpoint_every=1",
      "--config.train.num_steps=40",
      "--config.checkpoint.keep=10",
    )
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
    line = p.stderr.strip().splitlines()[-1]
    assert line.startswith("error: cannot write checkpoint") and os.path.join(workdir, "checkpoints") in line, line
    assert "needs about" in line and "free there" in line, line
    saved = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
    if saved:  # the last complete checkpoint still restores
      config = tiny_config(**{"train.checkpoint_every": 1, "train.num_steps": 40, "checkpoint.keep": 10})
      state, step = Experiment(config, mesh=make_mesh(1)).restore(workdir, "latest")
      assert step == saved[-1] and int(state.step) == step
  finally:
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_run_saved_before_a_shared_key_existed_stays_readable(tmp_path):
  """A config.json written before `train.profile_steps` was added is read with that key's default."""
  from genjax.configs import _saved
  from genjax.train.workdir import commit_config

  config = tiny_config()
  saved = json.loads(config.to_json_best_effort())
  del saved["train"]["profile_steps"]
  commit_config(str(tmp_path), json.dumps(saved))
  got = _saved.get_config(str(tmp_path))
  assert got.train.profile_steps == 0 and got.model.to_dict() == config.model.to_dict()
