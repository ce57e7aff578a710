"""DDPM (Ho et al. 2020) on the embedded MNIST digits, small enough to learn on a 2-core CPU.

Presets (comma-separated after the file name, e.g. `configs/ddpm.py:toy`):
  tiny              8x8 digits, a tiny U-Net, T = 10, 20 steps: for tests
  toy               the ring8 2-D mixture with a time-conditioned MLP (T = 1000)
  cifar10           the paper's CIFAR-10 model: 35.7M parameters (ch 128, multipliers
                    (1,2,2,2), 2 res blocks, attention at 16x16, dropout 0.1), Adam 2e-4,
                    batch 128, EMA 0.9999, T = 1000 linear; needs tfds data and a GPU
  paper_net         the cifar10 network and optimizer on the configured data (the digits
                    run padded to 32x32): for benchmarks without the CIFAR-10 files
  celeb_a           64x64 CelebA with the DDIM paper's 64x64 U-Net (multipliers
                    (1,2,2,2,4)); needs tfds data and a GPU
  oxford_flowers102 the same network on 64x64 Oxford flowers
  cosine            the cosine noise schedule (Nichol & Dhariwal 2021)
  conditional       class-conditional with classifier-free guidance (Ho & Salimans 2022):
                    the default U-Net plus a label embedding, labels dropped with
                    probability 0.1 in training, guidance w = 2 and DDIM-50 for
                    `generate` (`--guidance=W` or `--config.sampling.guidance=W`;
                    `--config.sampling.sampler=ancestral` for all T steps)
  peer              matched to the PyTorch peer of the speed benchmark (genjax/benchmarks/peers/
                    ddpm_torch.py: lucidrains' Unet(dim=32, dim_mults=(1, 2, 4), channels=1),
                    2.61M parameters, 41.4 GFLOP forward at batch 64): ch 32, multipliers
                    (1, 2, 4), one res block per level, attention at 7x7 and 14x14 (2.79M
                    parameters, 37.3 GFLOP), batch 64, Adam 1e-4 (b2 0.99), EMA 0.995

`experiments.evaluate` computes the exact bound (all T terms) on the first
`eval.bound_examples` test examples (0 = the whole split); the train loop's periodic
evaluation reports the simple loss and a one-term unbiased estimate of the bound.
Periodic sample grids use `sampling.grid_sampler` (DDIM, 50 steps by default: 20x
cheaper than ancestral); `generate` and `experiments.sample` use `sampling.sampler`.
"""

import ml_collections

from genjax.configs import default


def get_model_config() -> ml_collections.ConfigDict:
  m = default.model_section("ddpm")  # family, dtype, param_dtype
  # The process.
  m.num_timesteps = 1000
  m.schedule = "linear"  # linear | cosine
  m.beta_start = 1e-4  # linear: at T = 1000; scaled by 1000 / T otherwise
  m.beta_end = 0.02
  m.variance = "fixed_small"  # fixed_small (posterior variance) | fixed_large (beta_t)
  m.clip_denoised = True  # clip x0_hat to [-1, 1] in the reverse mean (images)
  # The U-Net (images).
  m.ch = 16
  m.ch_mult = (1, 2, 2)
  m.num_res_blocks = 1
  m.attn_resolutions = (7,)  # feature-map sizes with self-attention (after padding)
  m.dropout = 0.0
  m.norm_groups = 8  # at most this many groups (the largest divisor of the channels)
  m.pad_to = 0  # pad inputs up to this size (0: only to a multiple of 2**(levels-1))
  m.remat = False  # recompute each res/attention block in the backward pass: less memory, ~1/3 more compute
  # The MLP (vectors).
  m.mlp_hidden = (128, 128, 128)
  m.temb_dim = 64
  m.data_scale = 1.0  # vectors are divided by this
  # Class conditioning (classifier-free guidance; the `conditional` preset).
  m.conditional = False  # True: the network takes batch['label'] (needs a labelled dataset)
  m.label_dropout = 0.1  # conditional: P(training replaces a label by the null label)
  return m


def get_sampling_config() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.sampler = "ancestral"  # generate / experiments.sample: ancestral | ddim
  s.grid_sampler = "ddim"  # the train loop's periodic pictures
  s.ddim_steps = 50
  s.ddim_eta = 0.0  # 0 = deterministic DDIM
  s.trajectory_every = 0  # --kind=trajectory: steps between shown states (0 = T/10)
  s.interp_t = 500  # --kind=interpolation: the step t of x_t (0-based)
  s.guidance = 0.0  # classifier-free guidance w: (1 + w) eps(x, c) - w eps(x, null); conditional only
  return s


def _tiny(c):
  default.tiny(c)
  c.model.num_timesteps = 10
  c.model.ch = 8
  c.model.ch_mult = (1, 2)
  c.model.attn_resolutions = (4,)
  c.model.norm_groups = 4
  c.sampling.ddim_steps = 5
  c.sampling.interp_t = 5
  c.eval.num_samples = 4
  c.eval.bound_examples = 64


def _toy(c):
  c.data.name = "ring8"
  c.model.data_scale = 2.0  # the ring's radius: the data have about unit scale
  c.train.batch_size = 256
  c.train.num_steps = 6000
  c.train.eval_every = 2000
  c.train.sample_every = 2000
  c.train.checkpoint_every = 2000
  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 100
  c.eval.batch_size = 1000
  c.eval.bound_examples = 1000


def _paper_net(c):
  c.model.ch = 128
  c.model.ch_mult = (1, 2, 2, 2)
  c.model.num_res_blocks = 2
  c.model.attn_resolutions = (16,)
  c.model.dropout = 0.1
  c.model.norm_groups = 32
  c.optim.learning_rate = 2e-4
  c.optim.warmup_steps = 5000
  c.optim.grad_clip = 1.0
  c.train.batch_size = 128
  c.train.num_steps = 800000
  c.train.ema_decay = 0.9999
  c.train.eval_every = 10000
  c.train.sample_every = 10000
  c.train.checkpoint_every = 10000
  c.eval.batch_size = 128


def _cifar10(c):
  _paper_net(c)
  c.data.name = "cifar10"


def _celeb_a(c):
  _cifar10(c)
  c.data.name = "celeb_a"
  c.data.image_size = 64
  c.model.ch_mult = (1, 2, 2, 2, 4)
  c.train.batch_size = 64
  c.train.num_steps = 500000
  c.eval.batch_size = 64


def _oxford_flowers102(c):
  _celeb_a(c)
  c.data.name = "oxford_flowers102"


def _cosine(c):
  c.model.schedule = "cosine"


def _conditional(c):
  c.model.conditional = True
  c.model.label_dropout = 0.1
  c.sampling.guidance = 2.0
  c.sampling.sampler = "ddim"  # 50 steps: a guided step costs two network calls, and CPUs are slow


def _peer(c):
  c.model.ch = 32
  c.model.ch_mult = (1, 2, 4)
  c.model.num_res_blocks = 1
  c.model.attn_resolutions = (7, 14)
  c.model.dropout = 0.0
  c.model.norm_groups = 8
  c.train.batch_size = 64
  c.optim.learning_rate = 1e-4
  c.optim.b2 = 0.99
  c.optim.warmup_steps = 0
  c.train.ema_decay = 0.995


PRESETS = {
  "tiny": _tiny,
  "toy": _toy,
  "paper_net": _paper_net,
  "cifar10": _cifar10,
  "celeb_a": _celeb_a,
  "oxford_flowers102": _oxford_flowers102,
  "cosine": _cosine,
  "conditional": _conditional,
  "peer": _peer,
}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  c = default.get_base_config()
  c.model = get_model_config()
  c.sampling = get_sampling_config()
  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 100
  c.optim.schedule = "constant"
  c.optim.grad_clip = 1.0
  c.train.batch_size = 32
  c.train.num_steps = 2000
  c.train.ema_decay = 0.999
  c.train.eval_every = 1000
  c.train.sample_every = 1000
  c.train.checkpoint_every = 1000
  c.eval.batch_size = 250
  c.eval.num_samples = 16
  c.eval.bound_examples = 50  # experiments.evaluate: test examples for the exact T-term bound
  return default.apply_presets(c, preset, PRESETS)
