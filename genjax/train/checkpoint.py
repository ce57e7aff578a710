"""Orbax checkpoints: complete, atomic, and restorable bit for bit.

A checkpoint holds two items: `state` (the whole `TrainState`: params, optimizer
state, EMA params, model state, step, run key) saved with `StandardSave`, and `meta`
(JSON: step, data position, the eval metrics of that step if any). Nothing is
pickled. Orbax writes each checkpoint into a temporary directory and renames it once
complete, so a run killed in the middle of a save leaves only complete checkpoints
behind; leftovers are removed when the manager starts.

Retention: the last `keep` checkpoints, plus the best one by `best_metric` among the
checkpoints saved with eval metrics.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm


class Checkpointer:
  """A thin wrapper over `ocp.CheckpointManager` for train states."""

  def __init__(
    self,
    directory: str,
    keep: int = 3,
    best_metric: str | None = None,
    best_mode: str = "min",
    async_save: bool = True,
  ):
    if best_mode not in ("min", "max"):
      raise ValueError(f"checkpoint best mode must be 'min' or 'max', got {best_mode!r}")
    if keep < 1:
      raise ValueError(f"checkpoint.keep must be at least 1, got {keep}")
    self.directory = os.path.abspath(directory)
    self.best_metric = best_metric
    self.best_mode = best_mode
    policies = [cm.LatestN(n=keep)]
    if best_metric:
      policies.append(
        cm.BestN(
          get_metric_fn=lambda m: m[best_metric],
          reverse=best_mode == "min",
          n=1,
          keep_checkpoints_without_metrics=False,
        )
      )
    options = ocp.CheckpointManagerOptions(
      preservation_policy=cm.AnyPreservationPolicy(policies),
      cleanup_tmp_directories=True,
      enable_async_checkpointing=async_save,
      create=True,
    )
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

  def save(self, state: Any, data_position: int, metrics: dict[str, float] | None = None) -> int:
    """Saves `state` at its step (asynchronously); returns the step."""
    step = int(jax.device_get(state.step))
    meta = {"step": step, "data_position": int(data_position), "metrics": metrics}
    ok_metrics = metrics if metrics and self.best_metric in metrics else None
    self.manager.save(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
      metrics=ok_metrics,
      force=True,
    )
    return step

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def read_meta(self, step: int) -> dict:
    restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored["meta"])

  def best_step(self) -> int | None:
    """The step whose saved eval metrics are best by `best_metric`, or None if none has metrics."""
    best, best_value = None, None
    for step in self.all_steps():
      metrics = self.read_meta(step).get("metrics") or {}
      if self.best_metric not in metrics:
        continue
      value = metrics[self.best_metric]
      better = best_value is None or (value < best_value if self.best_mode == "min" else value > best_value)
      if better:
        best, best_value = step, value
    return best

  def resolve(self, which: str | int | None) -> int:
    """Turns 'latest', 'best' or a step number into an existing step, or explains what exists."""
    steps = self.all_steps()
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {self.directory}; train first (experiments.train)")
    if which in (None, "latest"):
      return max(steps)
    if which == "best":
      step = self.best_step()
      if step is None:
        raise FileNotFoundError(
          f"no checkpoint in {self.directory} carries eval metric {self.best_metric!r}; "
          f"available steps: {sorted(steps)} (use --checkpoint=latest)"
        )
      return step
    step = int(which)
    if step not in steps:
      raise FileNotFoundError(f"no checkpoint at step {step} in {self.directory}; available: {sorted(steps)}")
    return step

  def restore(self, target_state: Any, step: int) -> tuple[Any, dict]:
    """Restores the state at `step` onto the shardings and structure of `target_state`."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target_state)
    restored = self.manager.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
    )
    return restored["state"], dict(restored["meta"])

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
