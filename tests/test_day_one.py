"""What a researcher's first day touches (issue 12): help, config listing, the installed wheel,
configs by name from anywhere, and what a run shows (log lines, TensorBoard, a profile).
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import zipfile

import pytest

from genjax import hugepages
from tests.helpers import REPO, run_module


@pytest.mark.parametrize(
  "module,own",
  [
    ("experiments.train", []),
    ("experiments.evaluate", ["--checkpoint", "--sample_stats", "--split"]),
    ("experiments.sample", ["--kind", "--num", "--label", "--guidance", "--temperature"]),
    ("genjax.benchmarks.step_throughput", ["--batch_sizes", "--steps"]),
    ("genjax.benchmarks.sampling_throughput", ["--num", "--repeats"]),
    ("genjax.benchmarks.op_report", ["--batch_size", "--min_time"]),
  ],
)
def test_help_lists_the_commands_own_flags(module, own):
  p = run_module(module, "--help")
  assert p.returncode == 0, p.stderr
  shared = ["--workdir"] if module.startswith("experiments") else []
  for flag in ["--config", "--jax_distributed", "--print_config", *shared, *own]:
    assert f"  {flag}:" in p.stdout, (flag, p.stdout)


def test_print_config_lists_every_key_with_overrides_applied(tmp_path):
  p = run_module("experiments.train", "--config=vae:tiny", "--config.model.latent_dim=7", "--print_config")
  assert p.returncode == 0, p.stderr
  lines = dict(line.split(" = ", 1) for line in p.stdout.strip().splitlines())
  assert lines["model.latent_dim"] == "7" and lines["data.name"] == "'digits_8x8'"
  assert {"seed", "train.num_steps", "sampling.temperature", "eval.iwae_samples", "optim.learning_rate"} <= set(
    lines
  )


def test_the_wheel_holds_only_the_genjax_package_with_its_console_scripts(tmp_path):
  out = tmp_path / "wheel"
  p = subprocess.run(
    [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), REPO],
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert p.returncode == 0, p.stderr[-2000:]
  (wheel,) = glob.glob(str(out / "genjax-*.whl"))
  names = zipfile.ZipFile(wheel).namelist()
  name_version = "-".join(os.path.basename(wheel).split("-")[:2])  # a platform wheel: it holds the allocator
  assert {n.split("/")[0] for n in names} == {"genjax", name_version + ".dist-info"}
  assert any(n.startswith("genjax/_retain_alloc") for n in names) == bool(hugepages.retain_library())
  assert "genjax/configs/vae.py" in names and "genjax/cli/train.py" in names
  entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
  for script in ("genjax-train", "genjax-evaluate", "genjax-sample", "genjax-bench", "genjax-launch"):
    assert f"{script} = " in entry_points, script


def test_shipped_configs_resolve_by_name_from_any_directory(tmp_path):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  for spec in ("vae:tiny", "vae.py:tiny", "configs/vae.py:tiny", "genjax:configs/vae.py:tiny"):
    p = subprocess.run(
      [sys.executable, "-m", "genjax.cli.train", f"--config={spec}", "--print_config"],
      cwd=tmp_path,
      env=env,
      capture_output=True,
      text=True,
      timeout=120,
    )
    assert p.returncode == 0 and "model.family = 'autoencoder'" in p.stdout, (spec, p.stderr)
  # A file of the user's own wins over a shipped name.
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "vae.py").write_text(
    "from genjax.configs import vae\n\ndef get_config(preset=None):\n  c = vae.get_config(preset)\n"
    "  c.model.latent_dim = 3\n  return c\n"
  )
  p = subprocess.run(
    [sys.executable, "-m", "genjax.cli.train", "--config=configs/vae.py:tiny", "--print_config"],
    cwd=tmp_path,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert p.returncode == 0 and "model.latent_dim = 3" in p.stdout, p.stderr


def test_a_run_logs_lines_not_a_progress_bar_and_fills_tensorboard_and_a_profile(tmp_path):
  from tensorboard.backend.event_processing import event_accumulator

  workdir = str(tmp_path / "run")
  p = run_module(
    "experiments.train",
    "--config=vae:tiny",
    f"--workdir={workdir}",
    "--config.train.profile_steps=2",
    "--config.train.progress_bar=True",
  )
  assert p.returncode == 0, p.stderr[-3000:]
  # stderr is not a terminal: log lines, no carriage-return frames.
  assert "\r" not in p.stderr and "step 5/20 loss" in p.stderr and "step 20/20 loss" in p.stderr
  assert "decoder/dense_0/kernel" in p.stderr and "total" in p.stderr  # the parameter overview
  (events,) = glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))
  acc = event_accumulator.EventAccumulator(events, size_guidance={event_accumulator.IMAGES: 0})
  acc.Reload()
  tags = acc.Tags()
  assert {"train/loss", "test/elbo"} <= set(tags["scalars"])
  assert tags["images"] == ["samples"] and len(acc.Images("samples")) == 2  # steps 10 and 20
  assert "config/text_summary" in tags["tensors"]
  assert "_hparams_/experiment" in acc.PluginTagToContent("hparams")
  traces = glob.glob(os.path.join(workdir, "profile", "**", "*.trace.json.gz"), recursive=True)
  assert traces and os.path.getsize(traces[0]) > 1000, os.listdir(workdir)
