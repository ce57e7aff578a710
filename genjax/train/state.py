"""The train state: everything a run needs to continue exactly where it stopped."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """Params, optimizer state, EMA params, non-trained model state, step and run key.

  `key` holds the raw data of the run's `jax.random.key` (`uint32[2]` for threefry) so
  that it checkpoints like any array; `run_key()` wraps it back into a typed key.
  """

  step: jax.Array  # int32[]
  params: Any
  opt_state: Any
  ema_params: Any
  model_state: Any
  key: jax.Array  # uint32[...] raw key data

  def run_key(self) -> jax.Array:
    return jax.random.wrap_key_data(self.key)

  def step_key(self) -> jax.Array:
    """The step's key: `fold_in(run_key, step)`, the same on any device count and after resume."""
    return jax.random.fold_in(self.run_key(), self.step)


def create_train_state(
  params: Any, model_state: Any, tx: optax.GradientTransformation, run_key: jax.Array
) -> TrainState:
  """A fresh state at step 0; the EMA starts at the initial parameters."""
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=tx.init(params),
    ema_params=jax.tree.map(jnp.copy, params),
    model_state=model_state,
    key=jax.random.key_data(run_key),
  )


def check_ema_decay(decay: float) -> None:
  if not 0.0 <= decay < 1.0:
    raise ValueError(f"train.ema_decay must be in [0, 1), got {decay}")


def ema_decay_at(step: jax.Array, decay: float, warmup: bool) -> jax.Array:
  """The EMA decay used after update number `step` (0-based).

  With `warmup`, `min(decay, (1 + step) / (10 + step))` as in TensorFlow's
  ExponentialMovingAverage: early on the average forgets the random initial
  parameters quickly instead of lagging behind them for ~1/(1-decay) steps.
  """
  if not warmup:
    return jnp.asarray(decay, jnp.float32)
  step = step.astype(jnp.float32)
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_update(ema: Any, params: Any, decay: jax.Array | float) -> Any:
  """`decay * ema + (1 - decay) * params`, leafwise; decay 0 tracks `params` exactly."""
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def param_count(params: Any) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))


def param_overview(params: Any, max_rows: int = 40) -> str:
  """A table of the parameters: each array's path, shape and size, and the total.

  With more than `max_rows` arrays, the rows are summed per top-level module instead.
  """
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  rows = [
    ("/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path), x.shape, int(x.size))
    for path, x in leaves
  ]
  total = sum(r[2] for r in rows)
  if len(rows) > max_rows:
    groups: dict[str, list[int]] = {}
    for name, _, size in rows:
      top = name.split("/")[0]
      groups.setdefault(top, [0, 0])
      groups[top][0] += 1
      groups[top][1] += size
    lines = [f"  {name:<48} {count:>4} arrays {size:>12,}" for name, (count, size) in groups.items()]
  else:
    lines = [f"  {name:<48} {str(tuple(shape)):>20} {size:>12,}" for name, shape, size in rows]
  return "\n".join(lines + [f"  {'total':<48} {len(rows):>4} arrays {total:>12,}"])
