"""PixelCNN on the embedded MNIST digits, 8-bit values under a 256-way softmax.

Presets (comma-separated after the file name, e.g. `configs/pixelcnn.py:tiny,plain`):
  tiny         8x8 digits, a tiny network, 20 steps: for tests
  plain        the residual masked-conv stack (has a blind spot) instead of the gated one
  binarized    dynamically binarized digits under a Bernoulli output (the PixelRNN paper
               reports 81.30 nats on binarized MNIST, for the full 60k-image training set)
  conditional  a learned label embedding added to every layer
  peer         matched to pytorch-generative's PixelCNN (the speed benchmark's peer): the plain
               residual stack, 15 blocks on a 32-channel stream (16-channel bottleneck), a
               32-channel head, Bernoulli on dynamically binarized 28x28 digits, batch 256;
               53,569 parameters, as the peer's `PixelCNN(n_residual=15, residual_channels=16,
               head_channels=32)`
  cifar10      CIFAR-10 through tensorflow-datasets (needs a prepared data_dir); the papers
               report 3.14 bits/dim (PixelCNN) and 3.03 (gated PixelCNN)
"""

import ml_collections

from genjax.configs import default


def get_model_config() -> ml_collections.ConfigDict:
  m = default.model_section("pixelcnn")  # family, dtype, param_dtype
  m.variant = "gated"  # gated (vertical + horizontal stacks) | plain (residual blocks)
  m.likelihood = "categorical"  # categorical (256-way softmax, 8-bit) | bernoulli (binarized)
  m.binarization = "dynamic"  # bernoulli: dynamic | threshold
  m.features = 16  # small enough to learn on a 2-core CPU in minutes
  m.num_layers = 4  # gated layers (the first, 7x7, counts)
  m.num_blocks = 4  # plain residual blocks
  m.kernel_size = 3  # gated stacks' kernel
  m.conditional = False
  return m


def get_sampling_config() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.temperature = 1.0  # softmax temperature; 0 = arg-max
  s.sampler = "cached"  # cached (each position from the rows it depends on) | naive (full pass per position)
  return s


def _tiny(c):
  default.tiny(c)
  c.model.features = 8
  c.model.num_layers = 2
  c.model.num_blocks = 1
  c.eval.num_samples = 4


def _plain(c):
  c.model.variant = "plain"


def _binarized(c):
  c.model.likelihood = "bernoulli"


def _conditional(c):
  c.model.conditional = True


def _peer(c):
  c.model.variant = "plain"
  c.model.likelihood = "bernoulli"
  c.model.binarization = "dynamic"
  c.model.features = 32
  c.model.num_blocks = 15
  c.train.batch_size = 256


def _cifar10(c):
  c.data.name = "cifar10"
  c.model.features = 120  # divisible by 2 * 3 colour groups
  c.model.num_layers = 15
  c.model.num_blocks = 15
  c.train.batch_size = 64
  c.train.num_steps = 200000
  c.optim.learning_rate = 3e-4


PRESETS = {
  "tiny": _tiny,
  "plain": _plain,
  "binarized": _binarized,
  "conditional": _conditional,
  "peer": _peer,
  "cifar10": _cifar10,
}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  c = default.get_base_config()
  c.model = get_model_config()
  c.sampling = get_sampling_config()
  c.optim.learning_rate = 1e-3
  c.optim.grad_clip = 1.0
  c.train.batch_size = 16
  c.train.num_steps = 3000
  c.train.eval_every = 1000
  c.train.sample_every = 1000
  c.train.checkpoint_every = 1000
  c.eval.batch_size = 128
  c.eval.num_samples = 16  # each sample needs H*W*C forward passes
  return default.apply_presets(c, preset, PRESETS)
