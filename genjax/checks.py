"""Argument checks that give clear errors instead of shape errors from inside XLA.

Shape checks are static, so they run at trace time and cost nothing inside `jax.jit`.
Value checks (range, finiteness) can only look at concrete arrays: they run on
numpy / un-traced inputs and are skipped for tracers, where the train loop's
host-side batch validation and non-finite-loss check take over.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def is_concrete(x: Any) -> bool:
  """True if `x` holds values we can inspect now (not a tracer inside jit/grad/vmap)."""
  return not isinstance(x, jax.core.Tracer)


def check_same_shape(**arrays: Any) -> None:
  """Raises ValueError unless all named arrays have the same shape."""
  shapes = {name: tuple(np.shape(a)) for name, a in arrays.items()}
  if len(set(shapes.values())) > 1:
    desc = ", ".join(f"{k} {v}" for k, v in shapes.items())
    raise ValueError(f"expected arrays of the same shape, got {desc}")


def check_min_rank(name: str, x: Any, rank: int, what: str = "") -> None:
  """Raises ValueError if `x` has fewer than `rank` dimensions."""
  if np.ndim(x) < rank:
    extra = f" ({what})" if what else ""
    raise ValueError(f"{name} must have at least {rank} dimension(s){extra}, got shape {tuple(np.shape(x))}")


def check_event_ndims(name: str, x: Any, event_ndims: Any) -> int:
  """Returns `event_ndims` (trailing axes of `x` that form one event) after checking it is
  an int in [0, rank of `x`]; raises ValueError naming `x` otherwise."""
  rank = np.ndim(x)
  if isinstance(event_ndims, bool) or not isinstance(event_ndims, (int, np.integer)):
    raise ValueError(f"event_ndims must be an int (trailing axes of {name} to sum), got {event_ndims!r}")
  if not 0 <= event_ndims <= rank:
    raise ValueError(f"event_ndims={event_ndims} must lie in [0, {rank}], the rank of {name} {tuple(np.shape(x))}")
  return int(event_ndims)


def check_range(name: str, x: Any, low: float, high: float) -> None:
  """Raises ValueError if concrete `x` has values outside [low, high] (skipped under tracing)."""
  if not is_concrete(x):
    return
  a = np.asarray(x)
  if a.size == 0:
    return
  if np.issubdtype(a.dtype, np.floating) and np.isnan(a).any():
    first = tuple(int(i) for i in np.argwhere(np.isnan(a))[0])
    raise ValueError(
      f"{name} must lie in [{low}, {high}], but holds {int(np.isnan(a).sum())} NaN value(s), "
      f"first at index {first}"
    )
  lo, hi = float(a.min()), float(a.max())
  if lo < low or hi > high:
    raise ValueError(f"{name} must lie in [{low}, {high}], got values in [{lo:.6g}, {hi:.6g}]")


def check_finite(name: str, x: Any) -> None:
  """Raises ValueError if concrete `x` holds NaN or inf (skipped under tracing)."""
  if not is_concrete(x):
    return
  a = np.asarray(x)
  if np.issubdtype(a.dtype, np.floating):
    bad = ~np.isfinite(a)
    if bad.any():
      first = tuple(int(i) for i in np.argwhere(bad)[0])
      raise ValueError(f"{name} holds {int(bad.sum())} non-finite value(s) (NaN or inf), first at index {first}")
