"""A DCGAN on the embedded MNIST digits (28x28), non-saturating loss.

Presets (comma-separated after the file name, e.g. `configs/gan.py:tiny,minimax`):
  tiny            8x8 digits, tiny networks, 20 steps: for tests
  conditional     class-conditional G and D (label one-hot into both players)
  minimax         the generator minimizes log(1 - D(G(z))) (saturates early on)
  non_saturating  the generator minimizes -log D(G(z)) (the default)
  hinge           hinge losses for both players
  size64          the 64x64 DCGAN of Radford et al. (4x4x512 -> 64x64) on the digits resized to
                  64x64 (data.image_size): the 64x64 benchmark case, no download needed; as
                  in their code, G's update reuses D's update's fakes (model.reuse_fakes)
  celeb_a         64x64 CelebA through tensorflow-datasets (needs a prepared data_dir)
"""

import ml_collections

from genjax.configs import default


def get_model_config() -> ml_collections.ConfigDict:
  m = default.model_section("gan")  # family, dtype, param_dtype
  m.arch = "dcgan"  # dcgan (images) | mlp (toy vectors)
  m.loss = "non_saturating"  # non_saturating | minimax | hinge | wgan_gp (mlp only)
  m.latent_dim = 64
  m.g_features = (64, 32)  # 7x7x64 -> 14x14x32 -> 28x28x1 (one doubling per entry)
  m.d_features = (32, 64)  # 28 -> 14 -> 7, stride-2 4x4 convs
  m.g_hidden = (128, 128)  # mlp widths
  m.d_hidden = (128, 128)
  m.d_steps = 1  # k discriminator updates per generator update
  m.reuse_fakes = False  # G's update reuses D's update's fakes, one G forward per step (d_steps = 1)
  m.gp_weight = 10.0  # wgan_gp penalty weight
  m.conditional = False
  return m


def _tiny(c):
  default.tiny(c)
  c.model.latent_dim = 8
  c.model.g_features = (16, 8)  # 2x2 -> 4x4 -> 8x8
  c.model.d_features = (8, 16)


def _conditional(c):
  c.model.conditional = True


def _minimax(c):
  c.model.loss = "minimax"


def _non_saturating(c):
  c.model.loss = "non_saturating"


def _hinge(c):
  c.model.loss = "hinge"


def _size64(c):
  c.data.image_size = 64
  c.model.latent_dim = 100
  c.model.g_features = (512, 256, 128, 64)  # Radford et al.: 4x4x512 -> ... -> 64x64
  c.model.d_features = (64, 128, 256, 512)
  c.model.reuse_fakes = True  # as Radford et al.'s and PyTorch's DCGAN: one G forward per step


def _celeb_a(c):
  c.data.name = "celeb_a"
  c.data.image_size = 64
  c.model.latent_dim = 100
  c.model.g_features = (512, 256, 128, 64)  # Radford et al.: 4x4x512 -> ... -> 64x64x3
  c.model.d_features = (64, 128, 256, 512)
  c.model.reuse_fakes = True
  c.train.batch_size = 128
  c.train.num_steps = 50000


PRESETS = {
  "tiny": _tiny,
  "conditional": _conditional,
  "minimax": _minimax,
  "non_saturating": _non_saturating,
  "hinge": _hinge,
  "size64": _size64,
  "celeb_a": _celeb_a,
}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  c = default.get_base_config()
  c.model = get_model_config()
  c.optim.learning_rate = 2e-4  # Radford et al.: Adam, lr 2e-4, beta1 = 0.5
  c.optim.disc_learning_rate = 0.0  # 0 = optim.learning_rate
  c.optim.b1 = 0.5
  c.train.batch_size = 64
  c.train.num_steps = 2000
  c.train.ema_decay = 0.0  # batch-norm statistics belong to the raw generator
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.sample_every = 500
  c.train.checkpoint_every = 500
  c.eval.use_ema = False
  c.eval.num_samples = 64
  c.eval.frechet_samples = 1000  # experiments.evaluate: generated images for the Frechet distance
  return default.apply_presets(c, preset, PRESETS)
