"""Fixed, seeded, class-balanced choices of examples (numpy only).

Splits may be ordered by class (the embedded digits' test split is), so "the first N
examples" is not a sample. Figures, periodic sample grids and bounds computed on a
subset take `balanced_indices` instead.
"""

from __future__ import annotations

import numpy as np


def balanced_indices(labels: np.ndarray | None, num: int, seed: int = 0, size: int | None = None) -> np.ndarray:
  """`int64[num]` indices spread evenly over the classes, deterministic given `seed`.

  With labels `int[N]`: round robin over the classes in label order, a seeded random
  order within each class (a class that runs out is skipped). Without labels, a seeded
  random choice from `size` examples. `num` may not exceed the number of examples.
  """
  rng = np.random.default_rng(seed)
  if labels is None:
    if size is None:
      raise ValueError("balanced_indices needs labels or the number of examples (size)")
    if not 0 <= num <= size:
      raise ValueError(f"cannot choose {num} of {size} examples")
    return np.sort(rng.permutation(size)[:num]).astype(np.int64)
  labels = np.asarray(labels)
  if not 0 <= num <= len(labels):
    raise ValueError(f"cannot choose {num} of {len(labels)} examples")
  per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
  out, depth = [], 0
  while len(out) < num:
    for members in per_class:
      if depth < len(members) and len(out) < num:
        out.append(members[depth])
    depth += 1
  return np.asarray(out, np.int64)


class Subset:
  """Rows `indices` of a source, as a source (`len`, `source[idx] -> batch`)."""

  def __init__(self, source, indices: np.ndarray):
    self.source, self.indices = source, np.asarray(indices, np.int64)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    return self.source[self.indices[np.asarray(indices, np.int64)]]


def subset(source, indices: np.ndarray) -> Subset:
  """The examples `indices` of `source`, as a source."""
  return Subset(source, indices)


def balanced_examples(source, num: int, seed: int = 0) -> dict[str, np.ndarray]:
  """`num` examples of `source`: a fixed class-balanced choice (`balanced_indices`), repeated
  in turn when the source holds fewer than `num`."""
  labels = source[np.arange(len(source))].get("label")
  idx = balanced_indices(labels, min(num, len(source)), seed=seed, size=len(source))
  return source[np.resize(idx, num)]
