"""Shared timing for the PyTorch peer scripts (torch only; not imported by genjax or its tests).

Every peer script builds its model and a synthetic batch, defines `step()` (one full
train step: forward, loss, backward, optimizer, as the reference training loop does),
and calls `run(...)`, which pins torch to `--threads` threads (2 by default, fp32),
warms up, times `--repeats` blocks of `--steps` steps and prints one JSON line with the
median block: steps/s, parameter count, forward GFLOP per step (torch's FlopCounterMode,
counting 2 FLOPs per multiply-add, as XLA does), torch version and thread count.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def parse_args(batch: int, steps: int = 5, repeats: int = 3) -> argparse.Namespace:
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=batch)
  ap.add_argument("--steps", type=int, default=steps, help="steps per timed block")
  ap.add_argument("--repeats", type=int, default=repeats, help="timed blocks; the median is reported")
  ap.add_argument("--warmup", type=int, default=2)
  ap.add_argument("--threads", type=int, default=2)
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args()
  import torch

  torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  return args


def forward_gflop(fn) -> float | None:
  """GFLOP of `fn()` by torch's FlopCounterMode (None where it cannot count)."""
  try:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
      fn()
    return counter.get_total_flops() / 1e9
  except Exception:  # an op the counter does not know: report nothing rather than a wrong count
    return None


def run(name: str, step, params: int, args: argparse.Namespace, flops_fn=None, extra: dict | None = None) -> dict:
  import torch

  gflop = forward_gflop(flops_fn) if flops_fn is not None else None
  for _ in range(args.warmup):
    step()
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    for _ in range(args.steps):
      step()
    times.append((time.perf_counter() - t0) / args.steps)
  median = statistics.median(times)
  record = {
    "peer": name,
    "framework": "pytorch",
    "torch": torch.__version__,
    "threads": torch.get_num_threads(),
    "batch_size": args.batch,
    "param_count": params,
    "forward_gflop": gflop,
    "steps_per_sec": 1.0 / median,
    "step_ms_median": 1e3 * median,
    "step_ms_min": 1e3 * min(times),
    "steps": args.steps,
    "repeats": args.repeats,
    "dtype": "float32",
    **(extra or {}),
  }
  print(json.dumps(record, sort_keys=True))
  return record
