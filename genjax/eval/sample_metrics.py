"""Whole-sample statistics of a family's `generate()`: what per-example metrics cannot give.

Every evaluator takes `(family, params, model_state, splits, options)`: the family
(called only through its contract), its parameters and non-trained state, the data
(`{'train': source, 'test': source}`) and a `SampleStatistics` naming the number of
samples, the key and, for images, the feature network.

* Images (`image_statistics`): the Frechet distance between feature statistics of
  `num` generated images and the test split, with a feature network
  (`feature_network`: 'classifier' is the dataset's own classifier,
  `genjax.eval.feature_classifier`; 'inception' the FID Inception-v3 of
  `genjax.eval.inception` from a user-converted `.npz`), and as a floor the same
  distance between the test split and as many train images. A conditional family
  (`family.conditional`) draws its samples for the classes in turn (class-balanced, like
  the test split), and when the feature network is the dataset's classifier the
  samples are also classified: `sample_class_accuracy` is the fraction classified as
  the class they were drawn for (with the classifier's test accuracy beside it, the
  ceiling real images reach).
* Vectors (`vector_statistics`): the energy distance to the test split and its noise
  floor (a fresh target sample of the same size against the same test points); on the
  toys of `genjax.data.toy` with Gaussian modes, the fraction of samples nearest each
  mode and `genjax.eval.toy_metrics.mode_statistics` (modes covered, high-quality
  fraction, mode KL) with the target's own high-quality fraction.

Both add the family's own statistics (`Family.sample_statistics`, e.g. the GAN's D vs D*).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from genjax import distributed
from genjax.data.toy import TOYS
from genjax.eval import frechet
from genjax.eval.feature_classifier import FeatureClassifier, load_or_train
from genjax.eval.toy_metrics import energy_distance, mode_statistics

CHUNK = 500
#: Test points the energy distance compares against (it is O(N^2)).
ENERGY_POINTS = 2000


@dataclasses.dataclass(frozen=True)
class SampleStatistics:
  """Options of the sample statistics: `num` samples drawn with `key`; `features` maps
  `uint8[N, H, W, C]` images to `float32[N, F]` (images only; see `feature_network`)."""

  num: int
  key: jax.Array
  features: Callable[[np.ndarray], Any] | None = None
  features_info: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.num <= 0:
      raise ValueError(f"the number of samples for sample statistics must be positive, got {self.num}")


def generate_many(
  family: Any, params: Any, model_state: Any, key: jax.Array, num: int, labels: np.ndarray | None = None
) -> np.ndarray:
  """`num` samples from `family.generate` in compiled chunks of up to `CHUNK` (key folded per chunk);
  `labels int[num]` are passed on, chunk by chunk, to a conditional family.

  Multi-process runs: call it on every process; each gets all `num` samples (a chunk split
  over processes is gathered, `distributed.to_host`), so the statistics agree everywhere.
  """
  gen = jax.jit(family.generate, static_argnames="num")
  out = []
  for i, start in enumerate(range(0, num, CHUNK)):
    n, k = min(CHUNK, num - start), jax.random.fold_in(key, i)
    if labels is None:
      chunk = gen(params, model_state, k, num=n)
    else:
      chunk = gen(params, model_state, k, num=n, labels=np.asarray(labels[start : start + n]))
    out.append(distributed.to_host(chunk))
  return np.concatenate(out)


def class_cycle(family: Any, num: int) -> np.ndarray | None:
  """The labels a conditional family's samples are drawn for: `int32[num]`, the classes in
  turn (0, 1, ..., K-1, 0, ...); None for an unconditional family."""
  if not family.conditional:
    return None
  return (np.arange(num) % max(family.num_classes, 1)).astype(np.int32)


def feature_network(eval_config: Any, info: Any, splits: dict) -> tuple[Callable, dict]:
  """The `features(images) -> [N, F]` callable `eval.feature_net` names, and a description of it."""
  if eval_config.feature_net == "classifier":
    clf = load_or_train(info, splits)  # callable: its features; image_statistics also uses its logits
    return clf, {"feature_net": "classifier", "feature_classifier_test_accuracy": clf.test_accuracy}
  from genjax.eval import inception

  path = eval_config.inception_weights
  if not path:
    raise ValueError(
      "eval.feature_net='inception' needs eval.inception_weights: the .npz converted from "
      "pytorch-fid's pt_inception-2015-12-05-*.pth by genjax-convert-inception"
    )
  return inception.make_features(inception.load_weights(path)), {
    "feature_net": "inception",
    "inception_weights": path,
  }


def _all(source, limit: int | None = None) -> dict:
  """The whole split, or `limit` rows drawn without replacement by a fixed permutation (splits
  may be ordered by class, so the first rows are not a sample)."""
  if limit is None or limit >= len(source):
    return source[np.arange(len(source))]
  return source[np.sort(np.random.default_rng(0).permutation(len(source))[:limit])]


def image_statistics(family: Any, params: Any, model_state: Any, splits: dict, options: SampleStatistics) -> dict:
  """The Frechet distance of `options.num` samples to the test split, and the test-vs-train floor;
  for a conditional family with the dataset classifier as feature network (a
  `FeatureClassifier`), `sample_class_accuracy` of the samples against their labels."""
  if options.features is None:
    raise ValueError("image statistics need a feature network (SampleStatistics.features)")
  test = _all(splits["test"])["image"]
  labels = class_cycle(family, options.num)
  fake = generate_many(family, params, model_state, options.key, options.num, labels)

  def stats(images):
    return frechet.feature_statistics(frechet.batched_features(options.features, images))

  test_stats, fake_stats = stats(test), stats(fake)
  train = _all(splits["train"], len(test))["image"]
  out = dict(options.features_info)
  out.update(
    frechet_distance=frechet.frechet_distance(*fake_stats, *test_stats),
    frechet_test_vs_train=frechet.frechet_distance(*stats(train), *test_stats),
    frechet_num_generated=options.num,
    frechet_num_test=len(test),
    frechet_num_train=len(train),
  )
  if labels is not None and isinstance(options.features, FeatureClassifier):
    out["sample_class_accuracy"] = class_accuracy(options.features, fake, labels)
  out.update(family.sample_statistics(params, model_state, fake))
  return out


def class_accuracy(classifier: FeatureClassifier, images: np.ndarray, labels: np.ndarray) -> float:
  """The fraction of `images uint8[N, H, W, C]` that `classifier` assigns to their `labels int[N]`."""
  logits = frechet.batched_features(classifier.logits, images)
  return float(np.mean(np.argmax(logits, axis=-1) == np.asarray(labels)))


def vector_statistics(family: Any, params: Any, model_state: Any, splits: dict, options: SampleStatistics) -> dict:
  """Energy distance (and its floor) of `options.num` samples; mode statistics on the Gaussian toys."""
  x = generate_many(family, params, model_state, options.key, options.num).astype(np.float64)
  test = _all(splits["test"], ENERGY_POINTS)["x"]
  out: dict = {"toy_num_samples": options.num, "energy_distance": energy_distance(x[:ENERGY_POINTS], test)}
  spec = TOYS.get(family.info.name)
  if spec is not None:
    # The noise floor: a fresh target sample of the same size against the same test points.
    target, _ = spec.sample(np.random.default_rng(1), min(options.num, ENERGY_POINTS))
    out["energy_distance_target"] = energy_distance(target, test)
    if spec.modes is not None:
      nearest = np.argmin(np.linalg.norm(x[:, None, :] - spec.modes[None], axis=-1), axis=1)
      out["mode_fractions"] = (np.bincount(nearest, minlength=len(spec.modes)) / options.num).tolist()
      if spec.mode_std is not None:
        out.update(mode_statistics(x, spec.modes, spec.mode_std))
        out["target_high_quality_fraction"] = mode_statistics(target, spec.modes, spec.mode_std)[
          "high_quality_fraction"
        ]
  out.update(family.sample_statistics(params, model_state, x))
  return out


def sample_statistics(family: Any, params: Any, model_state: Any, splits: dict, options: SampleStatistics) -> dict:
  """`image_statistics` or `vector_statistics`, by the family's data."""
  fn = image_statistics if family.images else vector_statistics
  return fn(family, params, model_state, splits, options)
