"""A fixed, seeded, class-balanced choice of examples (numpy only).

``balanced_indices(labels, num, seed)`` is what figures and periodic sample grids use
instead of "the first ``num`` examples", which for a split stored in label order (the
embedded digits, a ``folder`` dataset) would be all of one class.
"""

from __future__ import annotations

import numpy as np


def balanced_indices(
  labels: np.ndarray | None, num: int, seed: int, num_examples: int | None = None
) -> np.ndarray:
  """``num`` example indices spread evenly over the classes, as ``int64[num]``.

  With ``labels: int[N]``: the classes present are taken in ascending label order and
  the members of the k-th of them (ascending index) are shuffled with
  ``np.random.default_rng([seed, k])``. The order of all N examples is then round robin:
  the first member of every class, then the second of every class that has one, and so
  on. The first K indices therefore hold one example of each of the K classes; for
  ``num <= N`` no index repeats, and while every class still has members the class
  counts differ by at most one.

  Without labels (``labels=None``, ``num_examples=N`` required): the order is
  ``np.random.default_rng(seed).permutation(N)``.

  The result is the first ``num`` entries of that order, which is repeated as often as
  needed when ``num > N``. The same arguments always give the same indices.

  Args:
    labels: ``int[N]`` class labels (any integers), or None for unlabelled data.
    num: how many indices to return, >= 0.
    seed: a non-negative integer.
    num_examples: N; required when ``labels`` is None, else optional and must equal
      ``len(labels)``.

  Returns:
    ``int64[num]`` indices into the N examples.

  Raises:
    ValueError: labels not 1-D integers, N = 0 with ``num > 0``, a negative ``num`` or
      ``seed``, or ``num_examples`` missing or disagreeing with ``labels``.
  """
  num, seed = int(num), int(seed)
  if num < 0:
    raise ValueError(f"balanced_indices: num must be >= 0, got {num}")
  if seed < 0:
    raise ValueError(f"balanced_indices: seed must be >= 0, got {seed}")
  if labels is None:
    if num_examples is None:
      raise ValueError("balanced_indices: without labels, pass num_examples (the number of examples N)")
    n = int(num_examples)
    if n < 0:
      raise ValueError(f"balanced_indices: num_examples must be >= 0, got {n}")
    order = np.random.default_rng(seed).permutation(n)
  else:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not (np.issubdtype(labels.dtype, np.integer) or labels.size == 0):
      raise ValueError(f"balanced_indices: labels must be int[N], got {labels.dtype.name}{list(labels.shape)}")
    n = labels.shape[0]
    if num_examples is not None and int(num_examples) != n:
      raise ValueError(f"balanced_indices: num_examples={num_examples} but labels has {n} entries")
    members = [
      np.random.default_rng([seed, k]).permutation(np.flatnonzero(labels == c))
      for k, c in enumerate(np.unique(labels))
    ]
    # Round robin: rank r of every class (ascending class order), then rank r + 1, ...
    rank = np.concatenate([np.arange(len(m)) for m in members]) if members else np.zeros(0, np.int64)
    klass = np.concatenate([np.full(len(m), k) for k, m in enumerate(members)]) if members else rank
    flat = np.concatenate(members) if members else rank
    order = flat[np.lexsort((klass, rank))]
  if num and n == 0:
    raise ValueError(f"balanced_indices: cannot choose {num} indices from 0 examples")
  if num == 0:
    return np.zeros(0, np.int64)
  reps = -(-num // n)
  return np.tile(order.astype(np.int64), reps)[:num]


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
  """`num` examples of `source`: a fixed class-balanced choice (`balanced_indices`, repeated in
  turn when the source holds fewer than `num`)."""
  labels = source[np.arange(len(source))].get("label")
  return source[balanced_indices(labels, num, seed, num_examples=len(source))]
