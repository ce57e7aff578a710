"""The FID Inception-v3 backend: architecture size, preprocessing against PyTorch's formulas,
the weights file (save/load, clear errors), the torch -> npz converter, the config wiring."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.cli import convert_inception_weights as convert_script
from genjax.eval import inception, sample_metrics
from tests.helpers import tiny_config

SIZE = inception.MIN_SIZE

# A hand-listed sample of pytorch-fid's state dict (torchvision names, OIHW conv weights).
TORCH_SHAPES = {
  "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
  "Conv2d_4a_3x3.bn.running_var": (192,),
  "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
  "Mixed_5d.branch5x5_2.conv.weight": (64, 48, 5, 5),
  "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
  "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
  "Mixed_6b.branch7x7_3.conv.weight": (192, 128, 7, 1),
  "Mixed_6e.branch7x7dbl_1.conv.weight": (192, 768, 1, 1),
  "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
  "Mixed_7b.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
  "Mixed_7c.branch1x1.conv.weight": (320, 2048, 1, 1),
  "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
  "Mixed_7c.branch_pool.bn.weight": (192,),
}


@pytest.fixture(scope="module")
def variables():
  return inception.random_variables(0)


@pytest.fixture(scope="module")
def images():
  return np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)


def _torch_state_dict(variables) -> dict[str, np.ndarray]:
  """The inverse of the converter's mapping: our variables as a torch-named OIHW state dict."""
  names = {
    "conv/kernel": "conv.weight",
    "bn/scale": "bn.weight",
    "bn/bias": "bn.bias",
    "bn/mean": "bn.running_mean",
    "bn/var": "bn.running_var",
  }
  out = {}
  for key, value in inception.flatten_variables(variables).items():
    _, *module, layer, leaf = key.split("/")
    name = ".".join(module) + "." + names[f"{layer}/{leaf}"]
    value = np.asarray(value)
    out[name] = value.transpose(3, 2, 0, 1) if leaf == "kernel" else value
    if leaf == "var":
      out[".".join(module) + ".bn.num_batches_tracked"] = np.array(0)
  out["fc.weight"] = np.zeros((1008, 2048), np.float32)
  out["fc.bias"] = np.zeros((1008,), np.float32)
  return out


def test_parameter_count_matches_torchvision():
  shapes = inception.expected_shapes()
  count = lambda prefix: sum(math.prod(s) for k, s in shapes.items() if k.startswith(prefix))
  # torchvision inception_v3: 27,161,264 parameters with AuxLogits (3,326,696) and the
  # 1000-way fc (2,049,000); the rest is the FID feature extractor. Keras' InceptionV3
  # without top (no BN scale) has 21,768,352 trainable = this minus the 17,216 BN scales.
  assert count("params/") == 27_161_264 - 3_326_696 - 2_049_000 == 21_785_568
  assert count("batch_stats/") == 2 * 17_216
  assert sum(k.endswith("/conv/kernel") for k in shapes) == 94
  assert len(shapes) == 5 * 94


def test_hand_listed_torch_shapes_map_to_flax():
  shapes = inception.expected_shapes()
  for name, shape in TORCH_SHAPES.items():
    key = inception.torch_key_to_flax(name)
    want = (shape[2], shape[3], shape[1], shape[0]) if len(shape) == 4 else shape
    assert shapes[key] == want, (name, key)
  assert inception.torch_key_to_flax("fc.weight") is None
  assert inception.torch_key_to_flax("Mixed_5b.branch1x1.bn.num_batches_tracked") is None
  with pytest.raises(ValueError, match="AuxLogits.fc.weight"):
    inception.torch_key_to_flax("AuxLogits.fc.weight")


def _torch_bilinear(x: np.ndarray, out: int) -> np.ndarray:
  """PyTorch `interpolate(mode='bilinear', align_corners=False)` of `[H, W]`, written out."""

  def weights(n_in):
    m = np.zeros((out, n_in))
    for i in range(out):
      src = max((i + 0.5) * n_in / out - 0.5, 0.0)
      i0 = min(int(np.floor(src)), n_in - 1)
      i1 = min(i0 + 1, n_in - 1)
      lam = src - i0
      m[i, i0] += 1 - lam
      m[i, i1] += lam
    return m

  return weights(x.shape[0]) @ x @ weights(x.shape[1]).T


@pytest.mark.parametrize("size_in,size_out", [(6, 11), (13, 5)])
def test_preprocess_matches_torch_bilinear(size_in, size_out):
  rng = np.random.default_rng(size_in)
  gray = rng.integers(0, 256, (2, size_in, size_in, 1), dtype=np.uint8)
  x = np.asarray(inception.preprocess(jnp.asarray(gray), size_out))
  assert x.shape == (2, size_out, size_out, 3)
  np.testing.assert_allclose(x[..., 0], x[..., 2], atol=1e-6)  # grayscale repeated to 3 channels
  for n in range(2):
    want = 2 * _torch_bilinear(gray[n, ..., 0] / 255.0, size_out) - 1
    np.testing.assert_allclose(x[n, ..., 1], want, atol=1e-5)
  rgb = np.asarray(inception.preprocess(jnp.asarray(np.repeat(gray, 3, axis=-1)), size_out))
  np.testing.assert_allclose(rgb, x, atol=1e-6)
  full = np.asarray(inception.preprocess(jnp.full((1, 4, 4, 3), 255, jnp.uint8), 4))
  np.testing.assert_array_equal(full, 1.0)
  with pytest.raises(ValueError, match="1 or 3"):
    inception.preprocess(jnp.zeros((1, 4, 4, 2), jnp.uint8))


def test_avg_pool_excludes_padding():
  x = jnp.ones((1, 4, 5, 2))
  np.testing.assert_allclose(inception._avg_pool_exclude_pad(x), 1.0)  # 4/9 at corners if pads counted
  y = jnp.arange(9.0).reshape(1, 3, 3, 1)
  assert float(inception._avg_pool_exclude_pad(y)[0, 0, 0, 0]) == pytest.approx((0 + 1 + 3 + 4) / 4)


def test_features_shape_and_save_load_round_trip(tmp_path, variables, images):
  features = inception.make_features(variables, size=SIZE, batch_size=2)
  f = features(images)  # 3 images: one full chunk and one padded chunk
  assert f.shape == (3, inception.NUM_FEATURES) and f.dtype == np.float32
  assert np.all(np.isfinite(f)) and np.all(f >= 0)  # means of ReLU outputs
  assert np.abs(f[0] - f[1]).max() > 0  # different images, different features
  path = str(tmp_path / "w.npz")
  inception.save_weights(path, variables)
  loaded = inception.load_weights(path)
  np.testing.assert_array_equal(inception.make_features(loaded, size=SIZE, batch_size=2)(images), f)
  np.testing.assert_array_equal(features(images[2:]), f[2:])  # chunking does not change features


def test_bad_weights_files_name_the_key(tmp_path, variables):
  flat = {k: np.asarray(v) for k, v in inception.flatten_variables(variables).items()}
  missing = dict(flat)
  del missing["params/Mixed_6c/branch7x7_2/conv/kernel"]
  p = str(tmp_path / "missing.npz")
  np.savez(p, **missing)
  with pytest.raises(ValueError, match="missing keys: params/Mixed_6c/branch7x7_2/conv/kernel"):
    inception.load_weights(p)
  bad = dict(flat)
  bad["batch_stats/Mixed_7c/branch_pool/bn/var"] = np.ones(7, np.float32)
  bad["params/extra/kernel"] = np.ones(3, np.float32)
  p = str(tmp_path / "bad.npz")
  np.savez(p, **bad)
  with pytest.raises(
    ValueError,
    match=r"unexpected keys: params/extra/kernel.*mis-shaped keys: "
    r"batch_stats/Mixed_7c/branch_pool/bn/var: \(7,\) \(expected \(192,\)\)",
  ):
    inception.load_weights(p)
  with pytest.raises(FileNotFoundError, match="nowhere.npz"):
    inception.load_weights(str(tmp_path / "nowhere.npz"))
  with pytest.raises(ValueError, match="inception_weights is empty"):
    inception.load_weights("")


def test_converter_round_trip(tmp_path, variables):
  state = _torch_state_dict(variables)
  for name, shape in TORCH_SHAPES.items():  # the inverse agrees with the hand list
    assert state[name].shape == shape, name
  out = str(tmp_path / "converted.npz")
  flat = convert_script.convert(state, out)
  with np.load(out) as data:
    assert sorted(data.files) == sorted(inception.expected_shapes())
    for key, value in inception.flatten_variables(variables).items():
      np.testing.assert_array_equal(data[key], np.asarray(value), err_msg=key)
  torch_w = state["Mixed_6b.branch7x7_2.conv.weight"]  # [out, in, 1, 7] -> [1, 7, in, out]
  assert flat["params/Mixed_6b/branch7x7_2/conv/kernel"][0, 5, 3, 9] == torch_w[9, 3, 0, 5]
  state["Mixed_5b.branch1x1.conv.weight"] = np.zeros((64, 192, 3, 3), np.float32)
  with pytest.raises(
    ValueError, match=r"mis-shaped keys: params/Mixed_5b/branch1x1/conv/kernel: \(3, 3, 192, 64\)"
  ):
    inception.from_torch_state_dict(state)


def test_converter_needs_torch_only_to_read_pth(tmp_path):
  try:
    import torch  # noqa: F401

    pytest.skip("torch is installed")
  except ImportError:
    pass
  with pytest.raises(ImportError, match="needs PyTorch"):
    convert_script.load_torch_state_dict(str(tmp_path / "x.pth"))


def test_feature_network_config(tmp_path, variables):
  import types

  from genjax import schema
  from genjax.train.config import EvalConfig

  config = types.SimpleNamespace(feature_net="inception", inception_weights="")
  with pytest.raises(ValueError, match="needs eval.inception_weights"):
    sample_metrics.feature_network(config, None, None)
  config.inception_weights = str(tmp_path / "absent.npz")
  with pytest.raises(FileNotFoundError, match="absent.npz"):
    sample_metrics.feature_network(config, None, None)
  path = str(tmp_path / "w.npz")
  inception.save_weights(path, variables)
  config.inception_weights = path
  features, info = sample_metrics.feature_network(config, None, None)
  assert callable(features) and info == {"feature_net": "inception", "inception_weights": path}
  section = tiny_config().eval.to_dict()
  section["feature_net"] = "vgg"
  with pytest.raises(
    schema.ConfigError, match="eval.feature_net='vgg' is not valid: expected one of 'classifier'"
  ):
    schema.parse(EvalConfig, section, "eval", others=("iwae_samples", "pca"))


def test_basic_conv_is_conv_then_eval_batch_norm_eps_1e3():
  rng = np.random.default_rng(3)
  x = rng.standard_normal((2, 4, 4, 3)).astype(np.float32)
  k = rng.standard_normal((1, 1, 3, 5)).astype(np.float32)
  scale, bias = rng.uniform(0.5, 2, 5), rng.standard_normal(5)
  mean, var = rng.standard_normal(5), rng.uniform(1e-4, 1e-2, 5)  # small var: eps matters
  variables = {
    "params": {"conv": {"kernel": k}, "bn": {"scale": scale, "bias": bias}},
    "batch_stats": {"bn": {"mean": mean, "var": var}},
  }
  got = inception.BasicConv(5).apply(jax.tree.map(jnp.float32, variables), x)
  want = np.maximum((x @ k[0, 0] - mean) / np.sqrt(var + 1e-3) * scale + bias, 0)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _pool_reference(x: np.ndarray, op) -> np.ndarray:
  """3x3, stride 1, padding 1 pooling over in-image pixels only, by brute force."""
  n, h, w, c = x.shape
  out = np.zeros_like(x)
  for i in range(h):
    for j in range(w):
      out[:, i, j] = op(x[:, max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2].reshape(n, -1, c), axis=1)
  return out


@pytest.mark.parametrize("max_pool", [False, True])
def test_e_block_pool_branch(max_pool):
  """Mixed_7b averages (padding excluded), Mixed_7c max-pools: the last 192 channels of the
  block are `branch_pool` applied to the brute-force pool."""
  x = np.random.default_rng(4).standard_normal((1, 3, 4, 6)).astype(np.float32)
  block = inception.InceptionE(max_pool=max_pool)
  shapes = jax.eval_shape(block.init, jax.random.key(0), x)  # numpy fill: no slow eager init
  rng = np.random.default_rng(5)
  variables = jax.tree.map(lambda s: jnp.asarray(rng.uniform(0.5, 1.5, s.shape), jnp.float32), shapes)
  out = block.apply(variables, x)
  assert out.shape == (1, 3, 4, 2048)
  pooled = _pool_reference(x, np.max if max_pool else np.mean)
  branch = {c: variables[c]["branch_pool"] for c in ("params", "batch_stats")}
  np.testing.assert_allclose(out[..., -192:], inception.BasicConv(192).apply(branch, pooled), rtol=1e-5, atol=1e-5)
