"""Times the PyTorch peer of the PixelCNN benchmark: pytorch-generative's PixelCNN train step.

  python genjax/benchmarks/peers/pixelcnn_torch.py --pytorch_generative=/path/to/checkout \\
      [--batch=256 --steps=3 --repeats=3 --warmup=1 --threads=2]

Not part of genjax (torch is not a dependency): run it in an environment with torch
(`pip install torch`) and a checkout of https://github.com/EugenHotaj/pytorch-generative
(not on PyPI; nothing of it is copied here). Only its `pytorch_generative/nn` and
`models/autoregressive/pixel_cnn.py` modules are imported (the package `__init__`s, which
pull in torchvision and every other model, are bypassed), so torch and numpy suffice.

The step is the one its `pixel_cnn.reproduce()` trains: `PixelCNN(in_channels=1,
out_channels=1, n_residual=15, residual_channels=16, head_channels=32)` (53,569
parameters, as `configs/pixelcnn.py:peer`), Adam at 1e-3, binary cross-entropy with logits
summed over pixels and averaged over the batch, on a fixed batch of binary 28x28 images,
fp32 on the CPU with `--threads` intra-op threads. The genjax step also clips the gradient
norm and updates an EMA of the parameters (a few elementwise passes over 53k numbers).

Prints one JSON line: steps/s (the median of `--repeats` timed blocks of `--steps` steps),
the fastest block, the process CPU time per step (all threads; less sensitive than wall
time to other work on a shared machine, though OpenMP threads that spin while waiting add
to it: `OMP_WAIT_POLICY=PASSIVE` stops that), batch, parameter count, threads, torch
version.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time
import types


def load_pixelcnn(checkout: str):
  """pytorch-generative's `PixelCNN` class from a checkout, without its package `__init__`s."""
  root = os.path.join(os.path.abspath(checkout), "pytorch_generative")
  if not os.path.isfile(os.path.join(root, "models", "autoregressive", "pixel_cnn.py")):
    raise SystemExit(f"--pytorch_generative={checkout!r} is not a pytorch-generative checkout (no {root}/models)")
  for name, sub in [("pytorch_generative", ""), ("pytorch_generative.models", "models")]:
    module = types.ModuleType(name)
    module.__path__ = [os.path.join(root, sub)]
    sys.modules[name] = module
  return importlib.import_module("pytorch_generative.models.autoregressive.pixel_cnn").PixelCNN


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--pytorch_generative",
    default=os.environ.get("PYTORCH_GENERATIVE"),
    required="PYTORCH_GENERATIVE" not in os.environ,
    help="path of a pytorch-generative checkout (default: $PYTORCH_GENERATIVE)",
  )
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--steps", type=int, default=3, help="steps per timed block")
  parser.add_argument("--repeats", type=int, default=3, help="timed blocks; the median is reported")
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--threads", type=int, default=2)
  args = parser.parse_args()

  import torch
  import torch.nn.functional as F

  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  model = load_pixelcnn(args.pytorch_generative)(
    in_channels=1, out_channels=1, n_residual=15, residual_channels=16, head_channels=32
  )
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
  x = (torch.rand(args.batch, 1, 28, 28) < 0.5).float()

  def step():
    optimizer.zero_grad()
    logits = model(x)
    loss = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1).mean()
    loss.backward()
    optimizer.step()
    return loss

  for _ in range(args.warmup):
    step()
  times, cpu = [], []
  for _ in range(args.repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
      step()
    times.append((time.perf_counter() - t0) / args.steps)
    cpu.append((time.process_time() - c0) / args.steps)
  median = statistics.median(times)
  print(
    json.dumps(
      {
        "peer": "pytorch-generative PixelCNN (n_residual=15, residual_channels=16, head_channels=32)",
        "batch_size": args.batch,
        "steps_per_sec": 1.0 / median,
        "step_ms_median": 1e3 * median,
        "step_ms_min": 1e3 * min(times),
        "cpu_ms_per_step_median": 1e3 * statistics.median(cpu),
        "param_count": sum(p.numel() for p in model.parameters()),
        "threads": args.threads,
        "dtype": "float32",
        "torch": torch.__version__,
      },
      sort_keys=True,
    )
  )


if __name__ == "__main__":
  main()
