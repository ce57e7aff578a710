"""The step-throughput suite: every benchmarked config, each in its own process.

  python -m benchmarks.suite                 # all cases, table + JSON lines
  python -m benchmarks.suite --only=vae      # cases whose name contains 'vae'
  python -m benchmarks.suite --out=benchmarks/results/cpu.jsonl

Each case runs `benchmarks.step_throughput` in a fresh process (so a case can force
its own number of host devices). Memory targets are checked: the compiled step's
temporary buffer size (`temp_bytes`, from XLA's memory analysis, deterministic for a
given program) must stay within `max_temp_mib`. Speeds are reported, not asserted:
compare medians and ratios taken side by side in one run of the suite.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

# The directory that holds the `genjax` package (the source tree, or site-packages when installed).
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BF16 = "--config.model.dtype=bfloat16"
# name, config (with overrides after spaces), batch sizes, forced host devices (CPU only; 0 = the
# platform's own), memory target (MiB), and optionally caps on --steps / --repeats for cases whose
# step takes seconds on a CPU
CASES = [
  ("vae_mlp", "configs/vae.py", [32, 128, 512], 0, 64),
  ("vae_conv", "configs/vae.py:conv", [64], 0, 256),
  ("vae_mlp_4dev", "configs/vae.py", [128], 4, 64),
  ("cvae_mlp", "configs/cvae.py", [128], 0, 64),
  ("vae_discretized", "configs/vae.py:discretized", [128], 0, 64),
  ("pixelcnn_gated", "configs/pixelcnn.py", [16], 0, 256),
  ("pixelcnn_plain", "configs/pixelcnn.py:plain", [16], 0, 256),
  ("realnvp_mnist", "configs/realnvp.py", [32], 0, 256, {"steps": 10, "repeats": 3}),
  ("realnvp_two_moons", "configs/realnvp.py:two_moons", [256], 0, 64),
  ("gan_dcgan28", "configs/gan.py", [64], 0, 256, {"steps": 10, "repeats": 3}),
  ("gan_dcgan64", "configs/gan.py:size64", [16], 0, 1024, {"steps": 2, "repeats": 2, "warmup": 1}),
  ("ddpm_default", "configs/ddpm.py", [32], 0, 512, {"steps": 10, "repeats": 3}),
  ("ddpm_small", "configs/ddpm.py:tiny", [32], 0, 64),
  ("ddpm_paper", "configs/ddpm.py:paper_net", [2], 0, 4096, {"steps": 2, "repeats": 2, "warmup": 1}),
  # Mixed precision (bf16 compute, fp32 params and losses) beside the fp32 cases above, and the
  # rematerialised U-Net (less temporary memory, more compute).
  ("gan_dcgan28_bf16", f"configs/gan.py {BF16}", [64], 0, 256, {"steps": 10, "repeats": 3}),
  ("ddpm_default_bf16", f"configs/ddpm.py {BF16}", [32], 0, 512, {"steps": 10, "repeats": 3}),
  ("ddpm_small_bf16", f"configs/ddpm.py:tiny {BF16}", [32], 0, 64),
  ("ddpm_default_remat", "configs/ddpm.py --config.model.remat=True", [32], 0, 512, {"steps": 10, "repeats": 3}),
  # The steps matched to the PyTorch peers (`benchmarks.peer_compare`), at the peers' batch size.
  ("gan_dcgan64_peer", "configs/gan.py:size64", [64], 0, 1024, {"steps": 3, "repeats": 3, "warmup": 2}),
  ("ddpm_peer", "configs/ddpm.py:peer", [64], 0, 1024, {"steps": 3, "repeats": 3, "warmup": 2}),
  ("realnvp_peer", "configs/realnvp.py:peer", [64], 0, 512, {"steps": 10, "repeats": 3}),
  ("pixelcnn_peer", "configs/pixelcnn.py:peer", [256], 0, 1024, {"steps": 3, "repeats": 3, "warmup": 2}),
]

# name, config (with overrides after spaces), images per sampler call, optionally a cap on --repeats
SAMPLING_CASES = [
  ("pixelcnn_gated", "configs/pixelcnn.py", 16),
  ("pixelcnn_gated_naive", "configs/pixelcnn.py --config.sampling.sampler=naive", 16, {"repeats": 1}),
  ("realnvp_mnist", "configs/realnvp.py", 64),
  ("ddpm_ancestral", "configs/ddpm.py", 16, {"repeats": 1}),
  (
    "ddpm_ddim50",
    "configs/ddpm.py --config.sampling.sampler=ddim --config.sampling.ddim_steps=50",
    16,
    {"repeats": 2},
  ),
]


def run_case(name, config, batch_sizes, devices, steps, repeats, warmup=None):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
  config, *overrides = config.split()
  if devices:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  cmd = [
    sys.executable,
    "-m",
    "genjax.benchmarks.step_throughput",
    f"--config={config}",
    *overrides,
    f"--batch_sizes={','.join(map(str, batch_sizes))}",
    f"--steps={steps}",
    f"--repeats={repeats}",
  ]
  if warmup is not None:
    cmd.append(f"--warmup={warmup}")
  p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
  if p.returncode != 0:
    raise RuntimeError(f"benchmark case {name} failed:\n{p.stderr[-3000:]}")
  records = json.loads(p.stdout.strip().splitlines()[-1])
  records = records if isinstance(records, list) else [records]
  for r in records:
    r["case"] = name
  return records


def run_sampling_case(name, config, num, repeats):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
  config, *overrides = config.split()
  cmd = [
    sys.executable,
    "-m",
    "genjax.benchmarks.sampling_throughput",
    f"--config={config}",
    *overrides,
    f"--num={num}",
    f"--repeats={repeats}",
  ]
  p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
  if p.returncode != 0:
    raise RuntimeError(f"sampling case {name} failed:\n{p.stderr[-3000:]}")
  record = json.loads(p.stdout.strip().splitlines()[-1])
  record["case"] = name
  return record


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--only", default="", help="run the cases whose name contains this")
  ap.add_argument("--steps", type=int, default=50)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--sampling_repeats", type=int, default=3)
  ap.add_argument("--out", default=None, help="append the records here (JSON lines)")
  args = ap.parse_args()
  records, failures = [], []
  for name, config, sizes, devices, max_mib, *caps in CASES:
    if args.only not in name:
      continue
    caps = caps[0] if caps else {}
    steps, repeats = (
      min(args.steps, caps.get("steps", args.steps)),
      min(args.repeats, caps.get("repeats", args.repeats)),
    )
    for r in run_case(name, config, sizes, devices, steps, repeats, caps.get("warmup")):
      r["max_temp_mib"] = max_mib
      if r["temp_bytes"] is not None and r["temp_bytes"] > max_mib * 2**20:
        failures.append(f"{name} batch {r['batch_size']}: temp {r['temp_bytes'] / 2**20:.1f} MiB > {max_mib} MiB")
      records.append(r)
  print(
    f"{'case':<19}{'devices':>8}{'batch':>7}{'steps/s':>10}{'examples/s':>12}{'ms/step':>9}"
    f"{'compile s':>10}{'temp MiB':>10}{'params':>10}{'dtype':>10}"
  )
  for r in records:
    temp = "-" if r["temp_bytes"] is None else f"{r['temp_bytes'] / 2**20:.1f}"
    print(
      f"{r['case']:<19}{r['device_count']:>8}{r['batch_size']:>7}{r['steps_per_sec']:>10.1f}"
      f"{r['examples_per_sec']:>12.0f}{r['step_ms_median']:>9.2f}{r['compile_seconds']:>10.2f}{temp:>10}"
      f"{r['param_count']:>10d}{r.get('dtype', 'float32'):>10}"
    )
  sampling = [
    run_sampling_case(name, config, num, min(args.sampling_repeats, caps[0].get("repeats", 99) if caps else 99))
    for name, config, num, *caps in SAMPLING_CASES
    if args.only in name
  ]
  if sampling:
    print(f"\n{'sampler':<17}{'images':>7}{'images/s':>10}{'s/image':>9}{'compile s':>10}")
    for r in sampling:
      print(
        f"{r['case']:<17}{r['num']:>7}{r['images_per_sec']:>10.3f}{r['seconds_per_image']:>9.3f}"
        f"{r['compile_seconds']:>10.1f}"
      )
  if records:
    print(f"device: {records[0]['device_kind']} ({records[0]['platform']})")
  records += sampling
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "a") as f:
      for r in records:
        f.write(json.dumps(r, sort_keys=True) + "\n")
  for r in records:
    print(json.dumps(r, sort_keys=True))
  if failures:
    print("memory targets exceeded:\n  " + "\n  ".join(failures), file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  main()
