"""Flow matching (Lipman et al. 2023; rectified flow, Liu et al. 2023) on the embedded MNIST digits.

The default compares with `configs/ddpm.py`'s: the same U-Net (16 channels, multipliers
(1, 2, 2), attention at 7x7), the same optimizer (Adam 1e-3, 100 warm-up steps, clip
1.0), batch 32, 2,000 steps, EMA 0.999. The path is the linear (conditional OT) one with
`sigma_min = 0` (rectified flow), times uniform; samples by Heun with 25 steps (50
network calls, as many as DDIM-50).

Presets (comma-separated after the file name, e.g. `configs/flow_matching.py:toy`):
  tiny          8x8 digits, a tiny U-Net, 4-step solvers: for tests
  toy           the ring8 2-D mixture with a time-conditioned MLP (like `ddpm.py:toy`)
  cosine        the variance-preserving cosine path instead of the linear one
  logit_normal  logit-normal training times (Esser et al. 2024), loc 0, scale 1
  euler         sampling by Euler with 50 steps (50 network calls, first order)
  paper_net     the DDPM paper's CIFAR-10 U-Net and optimizer (35.7M parameters) on the
                configured data: for benchmarks without the CIFAR-10 files
  cifar10       that network on CIFAR-10; needs tfds data and a GPU

`experiments.evaluate` reports the ODE log-likelihood on `eval.likelihood_examples`
class-balanced test examples (RK4, `eval.likelihood_steps` steps; images: bits/dim with
Hutchinson's divergence estimate, the dequantization correction included; vectors: NLL
in nats with the exact divergence); the train loop's periodic evaluation reports the
CFM loss only.
"""

import ml_collections

from genjax.configs import default


def get_model_config() -> ml_collections.ConfigDict:
  m = default.model_section("flow_matching")  # family, dtype, param_dtype
  # The probability path and the training times.
  m.path = "linear"  # linear (conditional OT) | cosine (variance preserving)
  m.sigma_min = 0.0  # linear: noise left at t = 1 (0 = rectified flow)
  m.time_distribution = "uniform"  # uniform | logit_normal
  m.logit_loc = 0.0  # logit_normal: t = sigmoid(loc + scale * n); loc > 0 weights the data end
  m.logit_scale = 1.0
  # The U-Net (images): configs/ddpm.py's.
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
  return m


def get_sampling_config() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.solver = "heun"  # generate / experiments.sample: euler | heun | rk4
  s.num_steps = 25  # heun: 2 network calls per step
  s.temperature = 1.0  # scales the base noise
  s.grid_solver = "heun"  # the train loop's periodic pictures
  s.grid_steps = 25
  s.trajectory_every = 0  # --kind=trajectory: steps between shown states (0 = at most 10 states)
  return s


def _tiny(c):
  default.tiny(c)
  c.model.ch = 8
  c.model.ch_mult = (1, 2)
  c.model.attn_resolutions = (4,)
  c.model.norm_groups = 4
  c.model.mlp_hidden = (32, 32)
  c.model.temb_dim = 16
  c.sampling.num_steps = 4
  c.sampling.grid_steps = 2
  c.sampling.trajectory_every = 0
  c.eval.num_samples = 4
  c.eval.likelihood_examples = 20
  c.eval.likelihood_steps = 4


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
  c.sampling.num_steps = 50
  c.sampling.grid_steps = 50
  c.eval.batch_size = 1000
  c.eval.likelihood_examples = 1000


def _cosine(c):
  c.model.path = "cosine"
  c.model.sigma_min = 0.0


def _logit_normal(c):
  c.model.time_distribution = "logit_normal"
  c.model.logit_loc = 0.0
  c.model.logit_scale = 1.0


def _euler(c):
  c.sampling.solver = "euler"
  c.sampling.num_steps = 50


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


PRESETS = {
  "tiny": _tiny,
  "toy": _toy,
  "cosine": _cosine,
  "logit_normal": _logit_normal,
  "euler": _euler,
  "paper_net": _paper_net,
  "cifar10": _cifar10,
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
  # experiments.evaluate: the ODE log-likelihood (see genjax/models/flow_matching.py)
  c.eval.likelihood_examples = 100  # class-balanced test examples (0 = the whole split)
  c.eval.likelihood_steps = 32
  c.eval.likelihood_solver = "rk4"  # euler | heun | rk4 (4 calls per step)
  c.eval.divergence = "auto"  # auto (Hutchinson for images, exact for vectors) | exact | hutchinson
  c.eval.num_probes = 1  # Hutchinson: Rademacher probes per example
  return default.apply_presets(c, preset, PRESETS)
