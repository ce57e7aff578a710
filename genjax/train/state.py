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
