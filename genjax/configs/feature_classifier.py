"""The feature network of the offline Frechet distance: a small conv classifier.

`genjax.eval.feature_classifier.load_or_train(data_config, get_config())` trains it on
the dataset's own train split the first time it is asked for (deterministically: a
fixed seed, a fixed data order, float32 on the CPU) and caches the parameters under
`cache_dir`; later calls load the cache. Its features are the penultimate layer.
Changing any value here changes the cache file's name, so a stale cache is never used.
"""

import ml_collections


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  del preset
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.features = (32, 64)  # stride-2 3x3 conv stages
  c.hidden = 128  # penultimate width = the Frechet feature dimension
  c.batch_size = 128
  c.num_steps = 1500
  c.learning_rate = 1e-3
  c.cache_dir = ""  # "" = $GENJAX_CACHE or ~/.cache/genjax
  return c
