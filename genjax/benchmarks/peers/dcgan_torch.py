"""PyTorch peer: the DCGAN of pytorch/examples (`dcgan/main.py`) at 64x64, one channel, batch 64.

  /path/to/torch-venv/bin/python genjax/benchmarks/peers/dcgan_torch.py [--batch 64 --steps 3]

The networks follow Radford et al. as that example describes them (written here from the
paper and the example's README, not copied): nz = 100, ngf = ndf = 64; the generator
is a 4x4 stride-1 transposed convolution from the 1x1 latent to 4x4x512, then 4x4
stride-2 transposed convolutions to 256, 128, 64 and 1 channels (64x64), batch norm and
ReLU after each hidden layer, tanh out, no biases; the discriminator mirrors it with
4x4 stride-2 convolutions 1 -> 64 -> 128 -> 256 -> 512 (batch norm after all but the
first, leaky ReLU 0.2) and a 4x4 valid convolution to one logit. Weights are drawn as
the example's `weights_init` does (N(0, 0.02) convolutions, N(1, 0.02) batch-norm scales).

One step is the example's training iteration: D on a real batch (label 1) and on
`G(z).detach()` (label 0), BCE, one Adam step (lr 2e-4, betas (0.5, 0.999)); then G
through D on the same fakes (label 1), one Adam step. Data: a fixed synthetic batch in
[-1, 1] (the step's cost does not depend on the pixel values). The genjax counterpart is
`configs/gan.py:size64` (its generator re-draws the latents for its own update, so it
runs the generator forward once more per step than this loop).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _timing  # noqa: E402

NZ, NGF, NDF, NC = 100, 64, 64, 1


def build():
  import torch
  from torch import nn

  def g_block(cin, cout, stride, pad):
    return [nn.ConvTranspose2d(cin, cout, 4, stride, pad, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]

  generator = nn.Sequential(
    *g_block(NZ, NGF * 8, 1, 0),
    *g_block(NGF * 8, NGF * 4, 2, 1),
    *g_block(NGF * 4, NGF * 2, 2, 1),
    *g_block(NGF * 2, NGF, 2, 1),
    nn.ConvTranspose2d(NGF, NC, 4, 2, 1, bias=False),
    nn.Tanh(),
  )

  def d_block(cin, cout, norm):
    layers = [nn.Conv2d(cin, cout, 4, 2, 1, bias=False)]
    return layers + ([nn.BatchNorm2d(cout)] if norm else []) + [nn.LeakyReLU(0.2, inplace=True)]

  discriminator = nn.Sequential(
    *d_block(NC, NDF, False),
    *d_block(NDF, NDF * 2, True),
    *d_block(NDF * 2, NDF * 4, True),
    *d_block(NDF * 4, NDF * 8, True),
    nn.Conv2d(NDF * 8, 1, 4, 1, 0, bias=False),
    nn.Sigmoid(),
  )

  def init(m):
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
      nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
      nn.init.normal_(m.weight, 1.0, 0.02)
      nn.init.zeros_(m.bias)

  generator.apply(init)
  discriminator.apply(init)
  return torch, generator, discriminator


def main():
  args = _timing.parse_args(batch=64, steps=3, repeats=3)
  torch, g, d = build()
  from torch import nn

  b = args.batch
  real = torch.rand(b, NC, 64, 64) * 2 - 1
  criterion = nn.BCELoss()
  opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
  opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
  ones, zeros = torch.ones(b), torch.zeros(b)

  def step():
    d.zero_grad()
    loss_real = criterion(d(real).view(-1), ones)
    loss_real.backward()
    fake = g(torch.randn(b, NZ, 1, 1))
    loss_fake = criterion(d(fake.detach()).view(-1), zeros)
    loss_fake.backward()
    opt_d.step()
    g.zero_grad()
    loss_g = criterion(d(fake).view(-1), ones)
    loss_g.backward()
    opt_g.step()

  def forward():
    with torch.no_grad():
      fake = g(torch.randn(b, NZ, 1, 1))
      d(real), d(fake), d(fake)

  params = sum(p.numel() for p in g.parameters()) + sum(p.numel() for p in d.parameters())
  _timing.run("dcgan64", step, params, args, flops_fn=forward)


if __name__ == "__main__":
  main()
