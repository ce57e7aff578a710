"""The command-line contract: train, resume, evaluate, sample, benchmark, and flag errors."""

from __future__ import annotations

import glob
import json
import os

import pytest

from tests.helpers import run_module, tiny_config


def test_train_resume_evaluate_sample(tmp_path):
  workdir = str(tmp_path / "run")
  cfg = ["--config=configs/vae.py:tiny", f"--workdir={workdir}"]
  p = run_module("experiments.train", *cfg, "--config.train.num_steps=20")
  assert p.returncode == 0, p.stderr[-3000:]
  for path in ["config.json", "metrics.jsonl", "checkpoints/10", "checkpoints/20", "samples/step_0000020.png"]:
    assert os.path.exists(os.path.join(workdir, path)), path
  assert glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["train"]["num_steps"] == 20

  p = run_module("experiments.train", *cfg, "--config.train.num_steps=30")
  assert p.returncode == 0, p.stderr[-3000:]
  assert "resuming from step 20" in p.stderr
  assert os.path.exists(os.path.join(workdir, "checkpoints", "30"))

  p = run_module("experiments.evaluate", *cfg, "--checkpoint=best")
  assert p.returncode == 0, p.stderr[-3000:]
  result = json.loads(p.stdout.strip().splitlines()[-1])
  assert result["step"] in (10, 20, 30)
  for key in ["elbo", "iwae", "bits_per_dim", "iwae_bits_per_dim", "kl", "mse", "pca_mse"]:
    assert key in result, key
  assert result["iwae"] >= result["elbo"] - 1.0  # IWAE (K=8) is the tighter bound, up to MC noise
  assert os.path.exists(os.path.join(workdir, "eval", f"step_{result['step']}_test.json"))

  out = str(tmp_path / "grid.png")
  p = run_module("experiments.sample", *cfg, "--num=16", f"--out={out}")
  assert p.returncode == 0, p.stderr[-3000:]
  from PIL import Image

  assert Image.open(out).size[0] > 8 * 4  # a 4x4 grid of (upscaled) 8x8 digits


def test_train_uses_every_forced_host_device(tmp_path):
  """The default num_devices=0 takes all 4 forced CPU devices and trains through the all-reduce."""
  workdir = str(tmp_path / "four")
  p = run_module(
    "experiments.train",
    "--config=configs/vae.py:tiny",
    f"--workdir={workdir}",
    "--config.train.num_steps=40",
    "--config.train.checkpoint_every=40",
    host_devices=4,
  )
  assert p.returncode == 0, p.stderr[-3000:]
  assert "on 4 cpu device(s)" in p.stderr
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records if r["split"] == "train"][-1] == 40


def test_unknown_config_key_fails_clearly(tmp_path):
  p = run_module(
    "experiments.train", "--config=configs/vae.py:tiny", f"--workdir={tmp_path}", "--config.train.num_stepz=5"
  )
  assert p.returncode == 2
  assert "unknown config key" in p.stderr and "num_steps" in p.stderr
  assert "Traceback" not in p.stderr


def test_bad_override_value_and_missing_checkpoint_fail_clearly(tmp_path):
  p = run_module(
    "experiments.train", "--config=configs/vae.py:tiny", f"--workdir={tmp_path}", "--config.train.num_steps=many"
  )
  assert p.returncode == 2 and "num_steps" in p.stderr and "Traceback" not in p.stderr
  p = run_module("experiments.evaluate", "--config=configs/vae.py:tiny", f"--workdir={tmp_path}/empty")
  assert p.returncode == 1 and "no checkpoint" in p.stderr


def test_presets_compose_and_unknown_preset_fails():
  c = tiny_config(preset="tiny,conv")
  assert c.model.arch == "conv" and c.data.name == "digits_8x8"
  with pytest.raises(ValueError, match="unknown preset 'huge'"):
    tiny_config(preset="huge")


def test_step_throughput_benchmark_reports_its_fields():
  from genjax.benchmarks.step_throughput import measure

  record = measure(tiny_config(), batch_size=32, steps=3, repeats=2, warmup=1)
  for key in [
    "steps_per_sec",
    "examples_per_sec",
    "compile_seconds",
    "device_kind",
    "device_count",
    "batch_size",
    "param_count",
  ]:
    assert key in record, key
  assert record["batch_size"] == 32 and record["param_count"] > 1000 and record["steps_per_sec"] > 0
  # getrusage over the timed steps: CPU time was spent, and the counts are per step, not totals
  assert record["user_ms_per_step"] + record["kernel_ms_per_step"] > 0 and record["page_faults_per_step"] >= 0
  assert record["max_rss_mb"] > 50 and "malloc" in record and record["fused_kernels"]


def test_pixelcnn_train_evaluate_sample_completion(tmp_path):
  workdir = str(tmp_path / "pixelcnn")
  cfg = ["--config=configs/pixelcnn.py:tiny,conditional", f"--workdir={workdir}"]
  p = run_module("experiments.train", *cfg, "--config.train.num_steps=10")
  assert p.returncode == 0, p.stderr[-3000:]
  p = run_module("experiments.evaluate", *cfg)
  assert p.returncode == 0, p.stderr[-3000:]
  result = json.loads(p.stdout.strip().splitlines()[-1])
  assert result["step"] == 10 and 0 < result["bits_per_dim"] < 9 and "nll" in result
  for kind in ("samples", "completion"):
    out = str(tmp_path / f"{kind}.png")
    p = run_module("experiments.sample", *cfg, "--num=4", f"--kind={kind}", "--label=3", f"--out={out}")
    assert p.returncode == 0, p.stderr[-3000:]
    assert os.path.getsize(out) > 100


def test_missing_tfds_dataset_says_how_to_get_it(tmp_path):
  p = run_module(
    "experiments.train",
    "--config=configs/pixelcnn.py:cifar10",
    f"--workdir={tmp_path}/run",
    f"--config.data.data_dir={tmp_path}/empty_tfds",
  )
  assert p.returncode == 1
  assert "python -m genjax.data.prepare cifar10 --data_dir=DIR" in p.stderr
  assert "Traceback" not in p.stderr
