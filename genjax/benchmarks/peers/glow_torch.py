"""PyTorch peer: normflows' multiscale Glow (L = 2 levels, K = 4 steps each, 64 hidden channels)
on 28x28 one-channel images, batch 64.

  /path/to/torch-venv/bin/python genjax/benchmarks/peers/glow_torch.py [--batch 64 --steps 5]

Built as normflows' Glow example builds it, unconditional: level 1 squeezes 28x28x1 to
14x14x4 and runs K Glow blocks (affine coupling over channel halves with a
3x3 -> 1x1 -> 3x3 conv net of 64 hidden channels, sigmoid scale, an invertible 1x1
convolution in LU form, actnorm), then factors out half of the channels; level 2
squeezes to 7x7x8 and runs K more blocks; diagonal Gaussian base distributions (77.7k
parameters). One step: the negative log-likelihood (`forward_kld`), backward, gradient
norm clipped to 100, Adam (lr 1e-3). Data: a fixed synthetic batch, dequantized 8-bit
values in [0, 1]. The genjax counterpart is `configs/realnvp.py:peer`.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _timing  # noqa: E402

L, K, HIDDEN, C, SIZE = 2, 4, 64, 1, 28


def build():
  import normflows as nf

  q0, merges, flows = [], [], []
  for i in range(L):
    level = [nf.flows.GlowBlock(C * 2 ** (L + 1 - i), HIDDEN, split_mode="channel", scale=True) for _ in range(K)]
    flows.append(level + [nf.flows.Squeeze()])
    if i > 0:
      merges.append(nf.flows.Merge())
      shape = (C * 2 ** (L - i), SIZE // 2 ** (L - i), SIZE // 2 ** (L - i))
    else:
      shape = (C * 2 ** (L + 1), SIZE // 2**L, SIZE // 2**L)
    q0.append(nf.distributions.DiagGaussian(shape))
  return nf.MultiscaleFlow(q0, flows, merges)


def main():
  args = _timing.parse_args(batch=64, steps=5, repeats=3)
  import torch

  model = build()
  x = (torch.randint(0, 256, (args.batch, C, SIZE, SIZE)).float() + torch.rand(args.batch, C, SIZE, SIZE)) / 256
  model.forward_kld(x)  # actnorm's data-dependent initialization on the first batch
  params = sum(p.numel() for p in model.parameters())
  opt = torch.optim.Adam(model.parameters(), lr=1e-3)

  def step():
    opt.zero_grad()
    loss = model.forward_kld(x)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
    opt.step()

  def forward():
    with torch.no_grad():
      model.forward_kld(x)

  _timing.run("glow", step, params, args, flops_fn=forward)


if __name__ == "__main__":
  main()
