"""genjax's train steps against PyTorch peers at matched architectures, side by side.

  python -m benchmarks.peer_compare --peer_python=/path/to/torch-venv/bin/python
  python -m benchmarks.peer_compare --peer_python=... --only=dcgan --rounds=5

For each pair (a genjax config and a peer script in `genjax/benchmarks/peers/`), it
runs `--rounds` rounds; each round measures both sides, each in its own fresh process
pinned to `--threads` CPUs (2 by default; torch also gets `set_num_threads`), fp32,
alternating which side goes first. The genjax side is `benchmarks.step_throughput` with
the config (XLA flags as a launch script gets them: the user's `XLA_FLAGS` if set, else
`genjax.xla_flags`' choice for that config); the peer side is the peer script run by
`--peer_python` (a Python with torch and the peers' packages; torch is not a genjax
dependency), by default with glibc's malloc as a PyTorch user runs it; `--peer_malloc=genjax`
gives it genjax's malloc settings instead (`genjax.hugepages`: huge pages and the retaining
allocator), for a like-for-like comparison of the computations alone. Reported per pair:
the median steps/s of each side over the rounds, their ratio (genjax / peer: above 1,
genjax is faster), the per-round ratios, parameter counts, and FLOPs (genjax: XLA's cost
analysis of the whole step; peer: torch's count of the forward pass). Prints a table and
one JSON line per pair.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers")

# name, genjax config, peer script (in peers/), batch size, steps per timed block, timed blocks
PAIRS = [
  ("dcgan64", "configs/gan.py:size64", "dcgan_torch.py", 64, 3, 3),
  ("ddpm_unet", "configs/ddpm.py:peer", "ddpm_torch.py", 64, 3, 3),
  ("realnvp_glow", "configs/realnvp.py:peer", "glow_torch.py", 64, 10, 3),
  ("pixelcnn15", "configs/pixelcnn.py:peer", "pixelcnn_torch.py", 256, 3, 3),
]


def _pin(threads: int):
  """A preexec_fn pinning the child to the first `threads` CPUs this process may use (Linux)."""
  if not hasattr(os, "sched_getaffinity"):
    return None
  cpus = sorted(os.sched_getaffinity(0))[:threads]
  return lambda: os.sched_setaffinity(0, cpus)


def _last_json(p: subprocess.CompletedProcess, what: str) -> dict:
  if p.returncode != 0:
    raise RuntimeError(f"{what} failed:\n{p.stderr[-3000:]}")
  record = json.loads(p.stdout.strip().splitlines()[-1])
  return record[0] if isinstance(record, list) else record


def run_genjax(
  config: str, batch: int, steps: int, repeats: int, threads: int | None, warmup: int = 2, env: dict | None = None
) -> dict:
  """One `benchmarks.step_throughput` process (pinned to `threads` CPUs unless None) -> its record.
  `env`: the child's environment (default: this process's)."""
  env = dict(os.environ if env is None else env)
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
  cmd = [
    sys.executable,
    "-m",
    "genjax.benchmarks.step_throughput",
    f"--config={config}",
    f"--batch_sizes={batch}",
    f"--steps={steps}",
    f"--repeats={repeats}",
    f"--warmup={warmup}",
  ]
  pin = _pin(threads) if threads else None
  p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, preexec_fn=pin)
  return _last_json(p, f"genjax {config}")


def peer_environ(malloc: str) -> dict:
  """The peer's environment: this process's (`glibc`), or with genjax's malloc settings (`genjax`)."""
  if malloc == "genjax":
    from genjax import hugepages

    return hugepages.environ()
  return dict(os.environ)


def run_peer(
  python: str, script: str, batch: int, steps: int, repeats: int, threads: int, malloc: str = "glibc"
) -> dict:
  cmd = [
    python,
    os.path.join(PEERS, script),
    f"--batch={batch}",
    f"--steps={steps}",
    f"--repeats={repeats}",
    f"--threads={threads}",
  ]
  env = peer_environ(malloc)
  p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, preexec_fn=_pin(threads))
  return _last_json(p, f"peer {script}")


def compare(pair, python: str, rounds: int, threads: int, log=print, peer_malloc: str = "glibc") -> dict:
  name, config, script, batch, steps, repeats = pair
  ours, theirs, loads = [], [], []
  for r in range(rounds):
    order = ("genjax", "peer") if r % 2 == 0 else ("peer", "genjax")
    for side in order:
      if side == "genjax":
        ours.append(run_genjax(config, batch, steps, repeats, threads))
      else:
        theirs.append(run_peer(python, script, batch, steps, repeats, threads, peer_malloc))
    loads.append(os.getloadavg()[0] if hasattr(os, "getloadavg") else None)
    log(
      f"  {name} round {r + 1}/{rounds} (load {loads[-1]}): genjax {ours[-1]['steps_per_sec']:.3f} steps/s, "
      f"peer {theirs[-1]['steps_per_sec']:.3f} steps/s"
    )
  g = statistics.median(x["steps_per_sec"] for x in ours)
  p = statistics.median(x["steps_per_sec"] for x in theirs)
  return {
    "pair": name,
    "genjax_config": config,
    "peer_script": script,
    "peer_malloc": peer_malloc,
    "batch_size": batch,
    "threads": threads,
    "rounds": rounds,
    "genjax_steps_per_sec": g,
    "peer_steps_per_sec": p,
    "ratio": g / p,
    "round_ratios": [a["steps_per_sec"] / b["steps_per_sec"] for a, b in zip(ours, theirs, strict=True)],
    "genjax_params": ours[0]["param_count"],
    "peer_params": theirs[0]["param_count"],
    "genjax_step_gflop": ours[0].get("step_gflop"),
    "peer_forward_gflop": theirs[0].get("forward_gflop"),
    "genjax_xla_flags": ours[0].get("xla_flags"),
    "genjax_xla_flags_source": ours[0].get("xla_flags_source"),
    "jax": ours[0].get("jax"),
    "jaxlib": ours[0].get("jaxlib"),
    "torch": theirs[0].get("torch"),
    "cpu": ours[0].get("cpu"),
    "load_average_1min": loads,  # after each round: other processes competing for the cores
  }


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--peer_python", required=True, help="a Python with torch and the peers' packages")
  ap.add_argument("--only", default="", help="the pairs whose name contains this")
  ap.add_argument("--rounds", type=int, default=3)
  ap.add_argument("--threads", type=int, default=2)
  ap.add_argument("--out", default=None, help="append the records here (JSON lines)")
  ap.add_argument(
    "--peer_malloc",
    choices=("glibc", "genjax"),
    default="glibc",
    help="the peers' malloc: glibc's defaults (as a PyTorch user runs them) or genjax's settings",
  )
  ap.add_argument(
    "--pytorch_generative",
    default=os.environ.get("PYTORCH_GENERATIVE"),
    help="a pytorch-generative checkout, for the PixelCNN peer (not on PyPI); without it that pair is skipped",
  )
  args = ap.parse_args()
  results = []
  for pair in PAIRS:
    if pair[2] == "pixelcnn_torch.py":
      if not args.pytorch_generative:
        print("pixelcnn: skipped (no --pytorch_generative checkout)", file=sys.stderr)
        continue
      os.environ["PYTORCH_GENERATIVE"] = args.pytorch_generative
    if args.only in pair[0]:
      results.append(compare(pair, args.peer_python, args.rounds, args.threads, peer_malloc=args.peer_malloc))
  print(
    f"\n{'pair':<14}{'genjax steps/s':>15}{'peer steps/s':>14}{'ratio':>8}  per-round ratios   params genjax/peer"
  )
  for r in results:
    rounds = ", ".join(f"{x:.2f}" for x in r["round_ratios"])
    print(
      f"{r['pair']:<14}{r['genjax_steps_per_sec']:>15.3f}{r['peer_steps_per_sec']:>14.3f}{r['ratio']:>8.2f}  "
      f"[{rounds}]  {r['genjax_params']:,} / {r['peer_params']:,}"
    )
  if args.out:
    with open(args.out, "a") as f:
      for r in results:
        f.write(json.dumps(r, sort_keys=True) + "\n")
  for r in results:
    print(json.dumps(r, sort_keys=True))


if __name__ == "__main__":
  main()
