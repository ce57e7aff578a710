"""RealNVP (Dinh et al. 2017) on the embedded MNIST digits: exact bits/dim of dequantized 8-bit data.

The default multi-scale layout for 28x28 digits has three scales, 28 -> 14 -> 7: at
28x28x1 three checkerboard couplings, a squeeze to 14x14x4, three channel couplings,
half the channels factored out; the same at 14x14x2 -> 7x7x8 -> 7x7x4; then four
checkerboard couplings at 7x7x4. Every coupling is followed by batch norm, and its
shift and log-scale come from a small residual conv net (16 features, 1 block) so that
it learns on a 2-core CPU in about 20 minutes.

Presets (comma-separated after the file name, e.g. `configs/realnvp.py:tiny`):
  tiny          8x8 digits, two scales (8 -> 4), a tiny network, 20 steps: for tests
  cifar10       CIFAR-10 through tensorflow-datasets (needs a prepared data_dir) with the
                paper's CIFAR-10 networks: 8 residual blocks of 64 features; the paper
                reports 3.49 bits/dim. The paper downscales once on CIFAR-10 (two
                scales: 32 -> 16), which `num_scales = 2` follows.
  two_moons, ring8, checkerboard
                the 2-D toys ({'x': float32[B, 2]}): 8 couplings with MLP networks,
                no dequantization, NLL in nats (compare with the target's entropy)
  toy_tiny      a small, short toy run for tests (combine with a toy: `ring8,toy_tiny`)
  peer          matched to the PyTorch peer of the speed benchmark (genjax/benchmarks/peers/
                glow_torch.py: normflows' multiscale Glow, 2 levels of 4 steps, 64 hidden
                channels, 77.7k parameters, 1.04 GFLOP forward at batch 64): two scales,
                coupling nets of 64 features without residual blocks (30.1k parameters,
                1.09 GFLOP), batch 64
"""

import ml_collections

from genjax.configs import default


def get_model_config() -> ml_collections.ConfigDict:
  m = default.model_section("realnvp")  # family, dtype, param_dtype
  m.num_scales = 3  # images: 28 -> 14 -> 7
  m.features = 16  # residual conv net width in every coupling
  m.num_blocks = 1  # residual blocks per coupling net
  m.batch_norm = True  # flow batch norm after every coupling (running stats in model_state)
  m.bn_momentum = 0.9
  m.alpha = 0.05  # logit preprocessing: logit(alpha + (1 - 2 alpha) x)
  m.num_couplings = 8  # vectors: MLP couplings
  m.hidden = (64, 64)  # vectors: MLP widths
  return m


def get_sampling_config() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.temperature = 1.0  # z ~ N(0, T^2 I)
  return s


def _tiny(c):
  default.tiny(c)
  c.model.num_scales = 2
  c.model.features = 8
  c.model.num_blocks = 1
  c.model.num_couplings = 4
  c.model.hidden = (32, 32)
  c.eval.num_samples = 16


def _cifar10(c):
  c.data.name = "cifar10"
  c.model.num_scales = 2
  c.model.features = 64
  c.model.num_blocks = 8
  c.train.batch_size = 64
  c.train.num_steps = 200000
  c.optim.learning_rate = 1e-3
  c.optim.weight_decay = 0.0  # the paper uses L2 5e-5 on the weights; not modelled here


def _toy(name):
  def apply(c):
    c.data.name = name
    c.train.batch_size = 256
    c.train.num_steps = 5000
    c.train.log_every = 250
    c.train.eval_every = 1000
    c.train.sample_every = 1000
    c.train.checkpoint_every = 1000
    c.eval.batch_size = 1000
    c.eval.num_samples = 1
    c.optim.learning_rate = 1e-3

  return apply


def _toy_tiny(c):
  c.data.toy_num_train = 2048
  c.data.toy_num_test = 1000
  c.model.num_couplings = 4
  c.model.hidden = (32, 32)
  default.tiny_run(c)
  c.train.batch_size = 128
  c.eval.batch_size = 500


def _peer(c):
  c.model.num_scales = 2
  c.model.features = 64
  c.model.num_blocks = 0
  c.train.batch_size = 64


PRESETS = {
  "tiny": _tiny,
  "cifar10": _cifar10,
  "two_moons": _toy("two_moons"),
  "ring8": _toy("ring8"),
  "checkerboard": _toy("checkerboard"),
  "toy_tiny": _toy_tiny,
  "peer": _peer,
}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  c = default.get_base_config()
  c.model = get_model_config()
  c.sampling = get_sampling_config()
  c.optim.learning_rate = 1e-3
  c.optim.grad_clip = 100.0
  c.train.batch_size = 32
  c.train.num_steps = 3500
  c.train.log_every = 100
  c.train.eval_every = 1000
  c.train.sample_every = 1000
  c.train.checkpoint_every = 1000
  c.train.ema_decay = 0.0  # eval uses the raw params, whose activations the running BN stats describe
  c.eval.batch_size = 256
  c.eval.num_samples = 64
  return default.apply_presets(c, preset, PRESETS)
