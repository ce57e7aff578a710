"""PyTorch peer: lucidrains' denoising-diffusion-pytorch U-Net and its GaussianDiffusion loss at
28x28, one channel, batch 64.

  /path/to/torch-venv/bin/python genjax/benchmarks/peers/ddpm_torch.py [--batch 64 --steps 3]

The model is the package's own `Unet(dim=32, dim_mults=(1, 2, 4), channels=1)` (2.6M
parameters: two ResNet blocks per level, linear attention at 28x28 and 14x14, full
attention at 7x7 and in the middle) inside `GaussianDiffusion(image_size=28,
timesteps=1000, objective='pred_noise', beta_schedule='linear')`, the DDPM objective
genjax trains (the package defaults to v-prediction and a sigmoid schedule; the network
is the same either way). One step is its `Trainer`'s: the loss, backward, gradient norm
clipped to 1, Adam (lr 1e-4, betas (0.9, 0.99)), and an EMA of the weights (decay
0.995, updated every step here; the Trainer updates it every 10 steps). Data: a fixed
synthetic batch in [0, 1].

The package's `Trainer` imports torchvision, which does not load beside the local
torch 2.13 CPU wheel; the model and loss do not use it, so a stub module stands in for
it. The genjax counterpart is `configs/ddpm.py:peer`.
"""

from __future__ import annotations

import os
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _timing  # noqa: E402


def _stub_torchvision():
  if "torchvision" in sys.modules:
    return
  try:
    import torchvision  # noqa: F401

    return
  except Exception:
    pass
  tv = types.ModuleType("torchvision")
  for sub in ("transforms", "utils", "models"):
    mod = types.ModuleType(f"torchvision.{sub}")
    setattr(tv, sub, mod)
    sys.modules[f"torchvision.{sub}"] = mod
  sys.modules["torchvision"] = tv


def main():
  args = _timing.parse_args(batch=64, steps=3, repeats=3)
  _stub_torchvision()
  import torch
  from denoising_diffusion_pytorch import GaussianDiffusion, Unet

  model = Unet(dim=32, dim_mults=(1, 2, 4), channels=1)
  diffusion = GaussianDiffusion(
    model, image_size=28, timesteps=1000, objective="pred_noise", beta_schedule="linear"
  )
  params = sum(p.numel() for p in model.parameters())
  opt = torch.optim.Adam(diffusion.parameters(), lr=1e-4, betas=(0.9, 0.99))
  ema = [p.detach().clone() for p in model.parameters()]
  images = torch.rand(args.batch, 1, 28, 28)

  def step():
    opt.zero_grad()
    loss = diffusion(images)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(diffusion.parameters(), 1.0)
    opt.step()
    with torch.no_grad():
      torch._foreach_lerp_(ema, [p.detach() for p in model.parameters()], 1 - 0.995)

  def forward():
    with torch.no_grad():
      diffusion(images)

  _timing.run("ddpm_unet", step, params, args, flops_fn=forward)


if __name__ == "__main__":
  main()
