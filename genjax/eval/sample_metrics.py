"""Whole-sample statistics of a family's `generate()`: what per-example metrics cannot give.

* Images: the Frechet distance between feature statistics of `num` generated images
  and the test split, with the feature network `eval.feature_net` ('classifier': the
  dataset's own classifier, `genjax.eval.feature_classifier`; 'inception': the FID
  Inception-v3 of `genjax.eval.inception` from the `.npz` at `eval.inception_weights`,
  which the user converts from pytorch-fid's weights), and as a floor the same distance between the test
  split and as many train images.
* Toy vectors: `genjax.eval.toy_metrics.mode_statistics` (modes covered, high-quality
  fraction, mode KL) where the toy has Gaussian modes, the fraction of samples nearest
  each mode, the energy distance to the test split (and, as its noise floor,
  `energy_distance_target`: a fresh target sample of the same size against the same
  test points, with its `target_high_quality_fraction`), and on 1-D data for a family with
  a discriminator (`family.logits`) the gap between D and `D* = p_data / (p_data + p_g)`.

Usable by every family that defines `generate(params, model_state, key, num)`.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from genjax.data.toy import TOYS
from genjax.eval import frechet
from genjax.eval.discriminator import optimal_discriminator_gap
from genjax.eval.toy_metrics import energy_distance, mode_statistics

CHUNK = 500


def generate_many(family: Any, params: Any, model_state: Any, key: jax.Array, num: int) -> np.ndarray:
  """`num` samples from `family.generate` in compiled chunks of up to `CHUNK` (key folded per chunk)."""
  gen = jax.jit(family.generate, static_argnames="num")
  out = []
  for i, start in enumerate(range(0, num, CHUNK)):
    out.append(np.asarray(gen(params, model_state, jax.random.fold_in(key, i), num=min(CHUNK, num - start))))
  return np.concatenate(out)


def feature_network(config: Any):
  """The `features(images) -> [N, F]` callable that `config.eval.feature_net` names, and a description."""
  name = config.eval.get("feature_net", "classifier")
  if name == "classifier":
    from genjax.eval.feature_classifier import load_or_train

    clf = load_or_train(config.data)
    return clf.features, {"feature_net": "classifier", "feature_classifier_test_accuracy": clf.test_accuracy}
  if name == "inception":
    from genjax.eval import inception

    path = config.eval.get("inception_weights", "")
    if not path:
      raise ValueError(
        "eval.feature_net='inception' needs eval.inception_weights: the .npz converted from "
        "pytorch-fid's pt_inception-2015-12-05-*.pth by scripts/convert_inception_weights.py"
      )
    return inception.make_features(inception.load_weights(path)), {
      "feature_net": "inception",
      "inception_weights": path,
    }
  raise ValueError(f"eval.feature_net={name!r} is not valid; expected 'classifier' or 'inception'")


def _all(source, limit: int | None = None) -> dict:
  """The whole split, or `limit` rows drawn without replacement by a fixed permutation (splits
  may be ordered by class, so the first rows are not a sample)."""
  if limit is None or limit >= len(source):
    return source[np.arange(len(source))]
  return source[np.sort(np.random.default_rng(0).permutation(len(source))[:limit])]


def image_statistics(exp: Any, params: Any, model_state: Any, key: jax.Array, num: int) -> dict:
  features, out = feature_network(exp.config)
  test = _all(exp.splits["test"])["image"]
  fake = generate_many(exp.family, params, model_state, key, num)
  test_stats = frechet.feature_statistics(frechet.batched_features(features, test))
  fake_stats = frechet.feature_statistics(frechet.batched_features(features, fake))
  train = _all(exp.splits["train"], len(test))["image"]
  train_stats = frechet.feature_statistics(frechet.batched_features(features, train))
  out.update(
    frechet_distance=frechet.frechet_distance(*fake_stats, *test_stats),
    frechet_test_vs_train=frechet.frechet_distance(*train_stats, *test_stats),
    frechet_num_generated=num,
    frechet_num_test=len(test),
    frechet_num_train=len(train),
  )
  return out


def toy_statistics(exp: Any, params: Any, model_state: Any, key: jax.Array, num: int) -> dict:
  family, spec = exp.family, TOYS[exp.info.name]
  x = generate_many(family, params, model_state, key, num).astype(np.float64)
  out: dict = {"toy_num_samples": num}
  if spec.modes is not None:
    nearest = np.argmin(np.linalg.norm(x[:, None, :] - spec.modes[None], axis=-1), axis=1)
    out["mode_fractions"] = (np.bincount(nearest, minlength=len(spec.modes)) / num).tolist()
    if spec.mode_std is not None:
      out.update(mode_statistics(x, spec.modes, spec.mode_std))
  test = _all(exp.splits["test"], 2000)["x"]
  out["energy_distance"] = energy_distance(x[:2000], test)
  # The noise floor: a fresh target sample of the same size against the same test points.
  target, _ = spec.sample(np.random.default_rng(1), min(num, 2000))
  out["energy_distance_target"] = energy_distance(target, test)
  if spec.modes is not None and spec.mode_std is not None:
    out["target_high_quality_fraction"] = mode_statistics(target, spec.modes, spec.mode_std)[
      "high_quality_fraction"
    ]
  if spec.dim == 1 and spec.log_prob is not None and hasattr(family, "logits"):
    lo, hi = family.picture_range() if hasattr(family, "picture_range") else (-8.0, 8.0)
    d_fn = jax.jit(lambda g: jax.nn.sigmoid(family.logits(params["discriminator"], model_state, g)[0]))
    out.update(optimal_discriminator_gap(lambda g: np.asarray(d_fn(g)), spec.log_prob, x, lo, hi))
  return out


def sample_statistics(exp: Any, params: Any, model_state: Any, key: jax.Array, num: int) -> dict:
  """Image or toy statistics of `num` samples of `exp.family.generate` (see the module docstring)."""
  if not hasattr(exp.family, "generate"):
    raise ValueError(f"family {exp.config.model.family!r} has no generate(); no sample statistics")
  if exp.info.kind == "image":
    return image_statistics(exp, params, model_state, key, num)
  return toy_statistics(exp, params, model_state, key, num)
