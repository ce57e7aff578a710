"""A small conv classifier trained on the dataset itself: the offline Frechet feature network.

`load_or_train(info, splits, settings)` returns a `FeatureClassifier` for a dataset
(its `DatasetInfo` and `{'train', 'test'}` sources), trained with `ClassifierSettings`
on the train split and cached as an `.npz` of parameters (the file name holds the
dataset, the image shape and a hash of the settings), together with its test accuracy.
Training is deterministic: the seed fixes the initialization and the batch order.
Changing any setting changes the cache file's name, so a stale cache is never used.

`clf.features(images uint8[N, H, W, C]) -> float32[N, hidden]` (the penultimate ReLU
layer) plugs into `genjax.eval.frechet`; `clf.logits` gives the class logits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from genjax import data as data_lib
from genjax.data import preprocess

log = logging.getLogger("genjax")


@dataclasses.dataclass(frozen=True)
class ClassifierSettings:
  """How the feature classifier is built and trained (fixed: Frechet distances stay comparable)."""

  seed: int = 0
  features: tuple[int, ...] = (32, 64)  # stride-2 3x3 conv stages
  hidden: int = 128  # penultimate width = the Frechet feature dimension
  batch_size: int = 128
  num_steps: int = 1500
  learning_rate: float = 1e-3
  cache_dir: str = ""  # "" = $GENJAX_CACHE or ~/.cache/genjax


class ConvClassifier(nn.Module):
  """`[B, H, W, C]` in [-1, 1] -> `(features [B, hidden], logits [B, num_classes])`."""

  features: Sequence[int]
  hidden: int
  num_classes: int

  @nn.compact
  def __call__(self, x):
    for i, f in enumerate(self.features):
      x = nn.relu(nn.Conv(f, (3, 3), strides=(2, 2), padding="SAME", name=f"conv_{i}")(x))
    h = nn.relu(nn.Dense(self.hidden, name="hidden")(x.reshape((x.shape[0], -1))))
    return h, nn.Dense(self.num_classes, name="logits")(h)


class FeatureClassifier:
  """A trained `ConvClassifier` and its test accuracy."""

  def __init__(self, net: ConvClassifier, params: Any, test_accuracy: float, path: str | None = None):
    self.net, self.params, self.test_accuracy, self.path = net, params, test_accuracy, path
    self._apply = jax.jit(lambda p, images: self.net.apply({"params": p}, preprocess.to_symmetric(images)))

  def features(self, images) -> jax.Array:
    """`uint8[N, H, W, C]` -> penultimate features `float32[N, hidden]`."""
    return self._apply(self.params, jnp.asarray(images))[0]

  __call__ = features  # a feature network: `clf(images)` is `clf.features(images)`

  def logits(self, images) -> jax.Array:
    return self._apply(self.params, jnp.asarray(images))[1]


def _cache_path(cfg: Any, info: Any) -> str:
  spec = json.dumps(
    {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items() if k != "cache_dir"},
    sort_keys=True,
  )
  digest = hashlib.sha256(spec.encode()).hexdigest()[:12]
  root = (
    cfg.cache_dir or os.environ.get("GENJAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "genjax")
  )
  shape = "x".join(map(str, info.shape))
  return os.path.join(root, "feature_classifier", f"{info.cache_key}_{shape}_{digest}.npz")


def train(cfg: Any, info: Any, splits: dict) -> FeatureClassifier:
  """Trains the classifier on `splits['train']` (Adam, cross-entropy) and scores `splits['test']`."""
  if info.kind != "image" or info.num_classes <= 0:
    raise ValueError(
      f"the feature classifier needs labelled images, but dataset {info.name!r} is "
      f"{info.kind!r} data with {info.num_classes} classes; use eval.feature_net='inception'"
    )
  net = ConvClassifier(tuple(cfg.features), int(cfg.hidden), info.num_classes)
  key = jax.random.key(cfg.seed)
  params = net.init(key, jnp.zeros((1,) + tuple(info.shape)))["params"]
  tx = optax.adam(cfg.learning_rate)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, images, labels):
    def loss_fn(p):
      logits = net.apply({"params": p}, preprocess.to_symmetric(images))[1]
      return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  batches = data_lib.BatchIterator(splits["train"], int(cfg.batch_size), seed=int(cfg.seed), shuffle=True)
  try:
    for i in range(int(cfg.num_steps)):
      b = next(batches)
      params, opt_state, loss = step(params, opt_state, b["image"], b["label"])
      if (i + 1) % 500 == 0:
        log.info("feature classifier step %d: loss %.4f", i + 1, float(loss))
  finally:
    batches.close()
  clf = FeatureClassifier(net, params, 0.0)
  clf.test_accuracy = accuracy(clf, splits["test"])
  return clf


def accuracy(clf: FeatureClassifier, source, batch_size: int = 500) -> float:
  correct = 0
  for batch, mask in data_lib.eval_batches(source, batch_size):
    pred = np.asarray(jnp.argmax(clf.logits(batch["image"]), axis=-1))
    correct += int(np.sum((pred == batch["label"]) * mask))
  return correct / len(source)


def load_or_train(info: Any, splits: dict, cfg: ClassifierSettings | None = None) -> FeatureClassifier:
  """The cached classifier for the dataset `info` describes; trained on `splits['train']` on first use."""
  cfg = cfg or ClassifierSettings()
  path = _cache_path(cfg, info)
  net = ConvClassifier(tuple(cfg.features), int(cfg.hidden), max(info.num_classes, 1))
  if os.path.exists(path):
    with np.load(path) as f:
      flat = {tuple(k.split("/")): jnp.asarray(f[k]) for k in f.files if k != "test_accuracy"}
      return FeatureClassifier(net, traverse_util.unflatten_dict(flat), float(f["test_accuracy"]), path)
  log.info("training the feature classifier for %s (cached to %s)", info.name, path)
  clf = train(cfg, info, splits)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  flat = {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(clf.params).items()}
  tmp = f"{path}.tmp-{os.getpid()}.npz"  # the processes of a multi-process run may all write it (same content)
  np.savez(tmp, test_accuracy=np.float64(clf.test_accuracy), **flat)
  os.replace(tmp, path)
  clf.path = path
  log.info("feature classifier test accuracy %.4f", clf.test_accuracy)
  return clf
