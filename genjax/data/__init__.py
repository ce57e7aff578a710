"""genjax data input: embedded, toy and tfds datasets behind one batch contract.

Batches are dicts of numpy arrays: images ``{'image': uint8[B, H, W, C],
'label': int32[B]}``; toy densities ``{'x': float32[B, D]}`` (+ 'label' for
toys with mixture components). See ``pipeline`` for sources and iteration and
``preprocess`` (imported separately, it needs jax) for model-side transforms.
"""

from genjax.data.embedded import load_digits_8x8
from genjax.data.embedded import load_mnist_embedded
from genjax.data.pipeline import ArraySource
from genjax.data.pipeline import BatchIterator
from genjax.data.pipeline import DATASET_NAMES
from genjax.data.pipeline import DatasetInfo
from genjax.data.pipeline import eval_batches
from genjax.data.pipeline import load_dataset
from genjax.data.pipeline import Source
from genjax.data.pipeline import validate_batch
from genjax.data.tfds_input import DatasetUnavailableError
from genjax.data.tfds_input import TfdsSource
from genjax.data.toy import make_toy_split
from genjax.data.toy import TOYS
from genjax.data.toy import ToySpec

__all__ = [
    'ArraySource', 'BatchIterator', 'DATASET_NAMES', 'DatasetInfo',
    'DatasetUnavailableError', 'Source', 'TfdsSource', 'TOYS', 'ToySpec',
    'eval_batches', 'load_dataset', 'load_digits_8x8', 'load_mnist_embedded',
    'make_toy_split', 'validate_batch',
]


def __getattr__(name):
  # `genjax.data.preprocess` needs jax; import it only when asked for.
  if name == 'preprocess':
    import importlib  # pylint: disable=g-import-not-at-top
    return importlib.import_module('genjax.data.preprocess')
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
