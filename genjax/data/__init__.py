"""genjax data input: embedded, own (folder / npz), toy and tfds datasets behind one batch contract.

Batches are dicts of numpy arrays: images ``{'image': uint8[B, H, W, C],
'label': int32[B]}``; toy densities ``{'x': float32[B, D]}`` (+ 'label' for
toys with mixture components). See ``pipeline`` for sources and iteration,
``own`` for your own images, ``select`` for class-balanced choices of
examples, ``prepare`` for preparing tfds datasets, and ``preprocess``
(imported separately, it needs jax) for model-side transforms.
"""

from genjax.data.embedded import load_digits_8x8, load_mnist_embedded
from genjax.data.errors import DataConfigError
from genjax.data.pipeline import (
  DATASET_NAMES,
  OWN_DATASETS,
  ArraySource,
  BatchIterator,
  DatasetInfo,
  Source,
  eval_batches,
  load_dataset,
  validate_batch,
)
from genjax.data.select import balanced_indices
from genjax.data.tfds_input import DatasetUnavailableError, TfdsSource
from genjax.data.toy import TOYS, ToySpec, make_toy_split

__all__ = [
  "ArraySource",
  "BatchIterator",
  "DATASET_NAMES",
  "DataConfigError",
  "DatasetInfo",
  "DatasetUnavailableError",
  "OWN_DATASETS",
  "Source",
  "TfdsSource",
  "TOYS",
  "ToySpec",
  "balanced_indices",
  "eval_batches",
  "load_dataset",
  "load_digits_8x8",
  "load_mnist_embedded",
  "make_toy_split",
  "validate_batch",
]


def __getattr__(name):
  # `genjax.data.preprocess` needs jax; import it only when asked for.
  if name == "preprocess":
    import importlib  # pylint: disable=g-import-not-at-top

    return importlib.import_module("genjax.data.preprocess")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
