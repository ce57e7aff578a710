"""MLP GANs on the toy densities of `genjax.data.toy` (the lecture studies of mode collapse).

Default: the ring of 8 Gaussians (radius 2, std 0.05) with the non-saturating loss.
Presets (comma-separated after the file name, e.g. `configs/gan_toy.py:ring8,minimax`):
  ring8           2-D ring of 8 Gaussians (the default)
  grid25          2-D 5x5 grid of Gaussians
  gaussian_1d     1-D: N(0, 1) noise mapped onto the standard Gaussian target
  bimodal_near    1-D: two Gaussians (std 0.5) at -1 and +1
  bimodal_far     1-D: two Gaussians (std 0.5) at -4 and +4: the generator, a continuous
                  map of a unimodal latent, collapses onto one mode
  minimax         generator minimizes log(1 - D(G(z)))
  non_saturating  generator minimizes -log D(G(z)) (the default)
  hinge, wgan_gp  the other formulations
  lecture         the lecture setting of the mode-collapse study: a small generator (1 hidden
                  layer of 16 ReLU units, so with a 1-D latent it is a piecewise-linear map of
                  N(0, 1) with at most 17 pieces), D 2 x 64, Adam 1e-3 (beta1 0.5) for both, k = 1,
                  batch 256, 3,000 steps. Used by `experiments.gan_bimodal_study` on bimodal_near
                  and bimodal_far with the same settings
  wide_g          after `lecture`: G with 2 x 128 hidden units instead (the ablation of the study)
  tiny            few steps, small networks: for tests
Scored by modes covered and the high-quality fraction (`experiments.evaluate`), and on
1-D data by the gap between the trained D and D* = p_data / (p_data + p_g).
"""

import ml_collections

from genjax.configs import default, gan


def _toy(name, latent_dim):
  def apply(c):
    c.data.name = name
    c.model.latent_dim = latent_dim

  return apply


def _loss(name):
  def apply(c):
    c.model.loss = name

  return apply


def _tiny(c):
  c.model.g_hidden = (16, 16)
  c.model.d_hidden = (16, 16)
  c.data.toy_num_train = 512
  c.data.toy_num_test = 256
  default.tiny_run(c)
  c.eval.batch_size = 64


def _lecture(c):
  c.model.g_hidden = (16,)
  c.model.d_hidden = (64, 64)
  c.model.d_steps = 1
  c.train.num_steps = 3000
  c.train.eval_every = 3000
  c.train.sample_every = 3000
  c.train.checkpoint_every = 3000
  c.train.progress_bar = False


def _wide_g(c):
  c.model.g_hidden = (128, 128)


PRESETS = {
  "ring8": _toy("ring8", 2),
  "grid25": _toy("grid25", 2),
  "gaussian_1d": _toy("gaussian_1d", 1),
  "bimodal_near": _toy("bimodal_near", 1),
  "bimodal_far": _toy("bimodal_far", 1),
  "minimax": _loss("minimax"),
  "non_saturating": _loss("non_saturating"),
  "hinge": _loss("hinge"),
  "wgan_gp": _loss("wgan_gp"),
  "lecture": _lecture,
  "wide_g": _wide_g,
  "tiny": _tiny,
}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  c = default.get_base_config()
  c.model = gan.get_model_config()
  c.model.arch = "mlp"
  c.model.latent_dim = 2
  c.model.g_hidden = (128, 128)
  c.model.d_hidden = (128, 128)
  c.data.name = "ring8"
  c.optim.learning_rate = 1e-3
  c.optim.disc_learning_rate = 0.0
  c.optim.b1 = 0.5
  c.train.batch_size = 256
  c.train.num_steps = 5000
  c.train.ema_decay = 0.0
  c.train.log_every = 100
  c.train.eval_every = 1000
  c.train.sample_every = 1000
  c.train.checkpoint_every = 1000
  c.eval.batch_size = 1000
  c.eval.use_ema = False
  c.eval.num_samples = 1
  c.eval.toy_samples = 10000  # experiments.evaluate: samples for mode statistics and D vs D*
  return default.apply_presets(c, preset, PRESETS)
