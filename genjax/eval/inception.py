"""The FID Inception-v3 (pool3, 2048 features) from a weights file the user supplies.

The network is the one published FID numbers are computed with (Heusel et al. 2017, the
TensorFlow graph `pt_inception-2015-12-05`, as ported by pytorch-fid): torchvision's
Inception-v3 layout with pytorch-fid's FID blocks, that is

* every conv is `BasicConv` = conv without bias -> batch norm (eps 1e-3, running
  statistics) -> ReLU;
* the average pools inside the A, C and first E blocks exclude the padding from the
  average (PyTorch `count_include_pad=False`), the last E block (`Mixed_7c`) max-pools;
* input: images `uint8[N, H, W, C]` (`C` = 1 is repeated to 3) scaled to [0, 1], resized
  bilinearly (half-pixel centres, no antialiasing) to 299x299, then mapped to [-1, 1];
* output: the global average of `Mixed_7c`, `float32[N, 2048]` (the fc head is dropped).

Weights are an `.npz` whose keys are the flattened Flax variable paths joined with '/':

  params/<Block>[/<branch>]/conv/kernel   float[KH, KW, IN, OUT]   (HWIO)
  params/<Block>[/<branch>]/bn/scale      float[OUT]
  params/<Block>[/<branch>]/bn/bias       float[OUT]
  batch_stats/<Block>[/<branch>]/bn/mean  float[OUT]
  batch_stats/<Block>[/<branch>]/bn/var   float[OUT]

with the module names of torchvision (`Conv2d_1a_3x3`, `Mixed_5b/branch1x1`, ...), so the
torch key `Mixed_6b.branch7x7_2.conv.weight` becomes `params/Mixed_6b/branch7x7_2/conv/kernel`
(`from_torch_state_dict`; `scripts/convert_inception_weights.py` converts the `.pth`).
Nothing is ever downloaded. `load_weights` checks every key and shape against the module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache, partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

FID_SIZE = 299
MIN_SIZE = 75  # the smallest input the strided convs and pools accept
NUM_FEATURES = 2048


class BasicConv(nn.Module):
  """Conv (no bias) -> batch norm (eps 1e-3, running statistics) -> ReLU on `[N, H, W, C]`."""

  features: int
  kernel: tuple[int, int] = (1, 1)
  strides: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x):
    (ph, pw) = self.padding
    x = nn.Conv(
      self.features, self.kernel, strides=self.strides, padding=((ph, ph), (pw, pw)), use_bias=False, name="conv"
    )(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _max_pool(x, stride: int = 2, pad: int = 0):
  return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=((pad, pad), (pad, pad)))


def _avg_pool_exclude_pad(x):
  """3x3, stride 1, padding 1 average over the in-image pixels only (`count_include_pad=False`)."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


class InceptionA(nn.Module):
  """35x35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 -> 224 + pool_features channels."""

  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv(64, name="branch1x1")(x)
    b5 = BasicConv(48, name="branch5x5_1")(x)
    b5 = BasicConv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
    b3 = BasicConv(64, name="branch3x3dbl_1")(x)
    b3 = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
    bp = BasicConv(self.pool_features, name="branch_pool")(_avg_pool_exclude_pad(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """35 -> 17 reduction: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2 -> 480 + C channels."""

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(384, (3, 3), strides=2, name="branch3x3")(x)
    bd = BasicConv(64, name="branch3x3dbl_1")(x)
    bd = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = BasicConv(96, (3, 3), strides=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool(x)], axis=-1)


class InceptionC(nn.Module):
  """17x17 block with factorized 7x7 convs (`c7` inner width) -> 768 channels."""

  c7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.c7
    b1 = BasicConv(192, name="branch1x1")(x)
    b7 = BasicConv(c7, name="branch7x7_1")(x)
    b7 = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = BasicConv(c7, name="branch7x7dbl_1")(x)
    bd = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = BasicConv(192, name="branch_pool")(_avg_pool_exclude_pad(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """17 -> 8 reduction: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2 -> 512 + C channels."""

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(192, name="branch3x3_1")(x)
    b3 = BasicConv(320, (3, 3), strides=2, name="branch3x3_2")(b3)
    b7 = BasicConv(192, name="branch7x7x3_1")(x)
    b7 = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = BasicConv(192, (3, 3), strides=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool(x)], axis=-1)


class InceptionE(nn.Module):
  """8x8 block with split 1x3/3x1 branches -> 2048 channels; the pool branch averages
  (padding excluded) or, in FID's last block, max-pools."""

  max_pool: bool = False

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv(320, name="branch1x1")(x)
    b3 = BasicConv(384, name="branch3x3_1")(x)
    b3 = jnp.concatenate(
      [
        BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
        BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3),
      ],
      axis=-1,
    )
    bd = BasicConv(448, name="branch3x3dbl_1")(x)
    bd = BasicConv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate(
      [
        BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
        BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd),
      ],
      axis=-1,
    )
    pooled = _max_pool(x, stride=1, pad=1) if self.max_pool else _avg_pool_exclude_pad(x)
    bp = BasicConv(192, name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
  """`float[N, H, W, 3]` in [-1, 1] (H, W >= 75; 299 for FID) -> pool3 features `float32[N, 2048]`."""

  @nn.compact
  def __call__(self, x):
    x = BasicConv(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)
    x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = BasicConv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = _max_pool(x)
    x = BasicConv(80, name="Conv2d_3b_1x1")(x)
    x = BasicConv(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = _max_pool(x)
    x = InceptionA(32, name="Mixed_5b")(x)
    x = InceptionA(64, name="Mixed_5c")(x)
    x = InceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)
    x = InceptionC(128, name="Mixed_6b")(x)
    x = InceptionC(160, name="Mixed_6c")(x)
    x = InceptionC(160, name="Mixed_6d")(x)
    x = InceptionC(192, name="Mixed_6e")(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE(name="Mixed_7b")(x)
    x = InceptionE(max_pool=True, name="Mixed_7c")(x)
    return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)


def preprocess(images: jax.Array, size: int = FID_SIZE) -> jax.Array:
  """`uint8[N, H, W, 1 or 3]` -> `float32[N, size, size, 3]` in [-1, 1]: grayscale repeated,
  bilinear resize with half-pixel centres and no antialiasing (PyTorch
  `interpolate(mode='bilinear', align_corners=False)`, as pytorch-fid)."""
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"Inception features need images [N, H, W, 1 or 3], got shape {images.shape}")
  x = images.astype(jnp.float32) / 255.0
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  if x.shape[1:3] != (size, size):
    x = jax.image.resize(x, (x.shape[0], size, size, 3), method="bilinear", antialias=False)
  return 2.0 * x - 1.0


def expected_shapes() -> dict[str, tuple[int, ...]]:
  """Every `.npz` key of a weights file and its shape (traced once, nothing computed)."""
  return dict(_expected_shapes())


@lru_cache(maxsize=1)
def _expected_shapes() -> tuple:
  shapes = jax.eval_shape(
    partial(InceptionV3().init, jax.random.key(0)), jnp.zeros((1, MIN_SIZE, MIN_SIZE, 3), jnp.float32)
  )
  return tuple((k, tuple(v.shape)) for k, v in flatten_variables(shapes).items())


def random_variables(seed: int = 0) -> dict:
  """Random (untrained) variables `{'params', 'batch_stats'}` drawn with numpy (He-normal
  kernels, unit batch-norm scale and variance, zero bias and mean): for tests and benchmarks
  (XLA takes about a minute on CPU to compile Flax's own init of this network)."""
  rng = np.random.default_rng(seed)
  flat = {}
  for key, shape in expected_shapes().items():
    if key.endswith("/kernel"):
      flat[key] = rng.standard_normal(shape, np.float32) * np.float32(np.sqrt(2.0 / np.prod(shape[:3])))
    elif key.endswith(("/scale", "/var")):
      flat[key] = np.ones(shape, np.float32)
    else:
      flat[key] = np.zeros(shape, np.float32)
  return traverse_util.unflatten_dict(flat, sep="/")


def flatten_variables(variables: Mapping) -> dict:
  """`{'params': {...}, 'batch_stats': {...}}` -> `{'params/Mixed_5b/branch1x1/conv/kernel': array, ...}`."""
  return traverse_util.flatten_dict(dict(variables), sep="/")


def check_weights(flat: Mapping[str, np.ndarray], source: str = "weights") -> None:
  """Raises a ValueError naming every missing, unexpected or mis-shaped key of `flat`."""
  want = expected_shapes()
  missing = sorted(set(want) - set(flat))
  unexpected = sorted(set(flat) - set(want))
  misshaped = [
    f"{k}: {tuple(np.shape(flat[k]))} (expected {want[k]})"
    for k in sorted(set(want) & set(flat))
    if tuple(np.shape(flat[k])) != want[k]
  ]
  problems = []
  for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped keys", misshaped)):
    if items:
      shown = ", ".join(items[:10]) + (f", ... ({len(items)} in all)" if len(items) > 10 else "")
      problems.append(f"{title}: {shown}")
  if problems:
    raise ValueError(
      f"{source} is not a FID Inception-v3 weights file ({len(want)} keys expected, see "
      f"genjax/eval/inception.py): " + "; ".join(problems)
    )


def save_weights(path: str, variables: Mapping) -> None:
  """Writes `variables` as the `.npz` described in the module docstring (float32)."""
  flat = {k: np.asarray(v, np.float32) for k, v in flatten_variables(variables).items()}
  check_weights(flat, f"variables for {path}")
  with open(path, "wb") as f:
    np.savez(f, **flat)


def load_weights(path: str) -> dict:
  """The `{'params', 'batch_stats'}` in the `.npz` at `path`, checked key by key against the module."""
  if not path:
    raise ValueError(
      "no Inception weights file given (eval.inception_weights is empty); convert pytorch-fid's "
      "pt_inception-2015-12-05-*.pth with scripts/convert_inception_weights.py"
    )
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f"Inception weights file {path!r} does not exist; convert pytorch-fid's "
      f"pt_inception-2015-12-05-*.pth with scripts/convert_inception_weights.py"
    )
  with np.load(path) as data:
    flat = {k: np.asarray(data[k], np.float32) for k in data.files}
  check_weights(flat, f"Inception weights file {path!r}")
  return traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()}, sep="/")


_TORCH_LEAVES = {
  "conv.weight": ("params", "conv/kernel"),
  "bn.weight": ("params", "bn/scale"),
  "bn.bias": ("params", "bn/bias"),
  "bn.running_mean": ("batch_stats", "bn/mean"),
  "bn.running_var": ("batch_stats", "bn/var"),
}
TORCH_IGNORED = ("fc.weight", "fc.bias")  # the 1008-way ImageNet head; `*.num_batches_tracked` too


def torch_key_to_flax(name: str) -> str | None:
  """`'Mixed_6b.branch7x7_2.conv.weight'` -> `'params/Mixed_6b/branch7x7_2/conv/kernel'`; None for
  the keys FID does not use (the fc head, `num_batches_tracked`)."""
  if name in TORCH_IGNORED or name.endswith(".num_batches_tracked"):
    return None
  for leaf, (collection, flax_leaf) in _TORCH_LEAVES.items():
    if name.endswith("." + leaf):
      module = name[: -len(leaf) - 1].replace(".", "/")
      return f"{collection}/{module}/{flax_leaf}"
  raise ValueError(
    f"torch state dict key {name!r} is not part of the FID Inception-v3 (expected "
    f"'<module>.conv.weight' or '<module>.bn.{{weight,bias,running_mean,running_var}}')"
  )


def from_torch_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """pytorch-fid's state dict (numpy arrays; conv weights OIHW) -> the flat `.npz` dict (HWIO),
  checked against the module. The fc head and `num_batches_tracked` are dropped."""
  flat = {}
  for name, value in state_dict.items():
    key = torch_key_to_flax(name)
    if key is None:
      continue
    value = np.asarray(value, np.float32)
    if key.endswith("/kernel"):
      if value.ndim != 4:
        raise ValueError(f"torch conv weight {name!r} should be 4-D [out, in, kh, kw], got shape {value.shape}")
      value = value.transpose(2, 3, 1, 0)
    flat[key] = value
  check_weights(flat, "converted torch state dict")
  return flat


@partial(jax.jit, static_argnames="size")
def _features(variables, images, size):
  return InceptionV3().apply(variables, preprocess(images, size))


def make_features(variables: Mapping, size: int = FID_SIZE, batch_size: int = 50):
  """`features(images uint8[N, H, W, 1 or 3]) -> float32[N, 2048]`, computed in compiled chunks
  of `batch_size` (the last padded, so one compile per image shape). `size` = 299 for FID."""
  if size < MIN_SIZE:
    raise ValueError(f"Inception input size {size} is below the minimum {MIN_SIZE}")

  def features(images):
    images = np.asarray(images)
    out = []
    for start in range(0, len(images), batch_size):
      chunk = images[start : start + batch_size]
      pad = batch_size - len(chunk)
      if pad:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
      out.append(np.asarray(_features(variables, jnp.asarray(chunk), size))[: batch_size - pad])
    return np.concatenate(out) if out else np.zeros((0, NUM_FEATURES), np.float32)

  return features
