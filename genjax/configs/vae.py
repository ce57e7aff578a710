"""The VAE on the embedded MNIST digits (the project's default experiment).

Presets (comma-separated after the file name, e.g. `configs/vae.py:tiny,conv`):
  tiny      8x8 digits, tiny networks, 20 steps: for tests
  conv      strided-conv encoder and transposed-conv decoder instead of the MLPs
            (about 8x slower per step on a 2-core CPU)
  gaussian  dequantized 8-bit data under a Gaussian decoder (bits/dim with the correction)
  discretized  8-bit data under a discretized Gaussian decoder (exact discrete bits/dim)
  latent2   a 2-D latent (for the latent map)
"""

import ml_collections

from genjax.configs import default


def get_model_config() -> ml_collections.ConfigDict:
  m = default.model_section("autoencoder")  # family, dtype, param_dtype
  m.variant = "vae"  # ae | dae | vae | cvae
  m.arch = "mlp"  # mlp | conv (strided-conv encoder, transposed-conv decoder)
  m.latent_dim = 16
  m.hidden = (512, 256)  # MLP widths (conv: the first is the dense width)
  m.features = (16, 32)  # conv channels, one stride-2 stage each
  m.likelihood = "bernoulli"  # bernoulli (binarized) | gaussian (dequantized 8-bit) | discretized_gaussian (8-bit)
  m.binarization = "dynamic"  # dynamic (Bernoulli draw per step) | threshold (at 0.5)
  m.learn_variance = True  # gaussian: the decoder also outputs a per-pixel log-variance
  m.gaussian_logvar = 0.0  # gaussian: fixed log-variance when not learned
  m.beta = 1.0  # beta-VAE weight on the KL (1 = the ELBO)
  m.corruption = "gaussian"  # dae: gaussian | masking
  m.corruption_level = 0.3
  return m


def get_sampling_config() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.temperature = 1.0  # latent draws: N(0, T^2 I) (VAE), N(mean, T^2 cov) of the codes (AE, DAE)
  return s


def _tiny(c):
  default.tiny(c)
  c.model.hidden = (64, 32)
  c.model.features = (8, 16)
  c.model.latent_dim = 4
  c.eval.iwae_samples = 8


def _conv(c):
  c.model.arch = "conv"
  c.model.hidden = (256,)
  c.train.batch_size = 64


def _gaussian(c):
  c.model.likelihood = "gaussian"


def _discretized(c):
  c.model.likelihood = "discretized_gaussian"


def _latent2(c):
  c.model.latent_dim = 2


PRESETS = {"tiny": _tiny, "conv": _conv, "gaussian": _gaussian, "discretized": _discretized, "latent2": _latent2}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  c = default.get_base_config()
  c.model = get_model_config()
  c.sampling = get_sampling_config()
  c.optim.learning_rate = 1e-3
  c.train.batch_size = 128
  c.train.num_steps = 5000
  c.eval.iwae_samples = 256  # K for the IWAE bound in experiments.evaluate
  c.eval.pca = True  # PCA baseline at the same latent size in experiments.evaluate
  return default.apply_presets(c, preset, PRESETS)
