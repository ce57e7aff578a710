"""An experiment assembled from its config: data, family, mesh, optimizer and state.

`experiments.train`, `experiments.evaluate`, `experiments.sample` and the benchmarks
all build the same `Experiment`, so they agree on shapes, keys and shardings.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from genjax import data as data_lib
from genjax import models
from genjax.train import sharding, two_player
from genjax.train.checkpoint import Checkpointer, CheckpointReader
from genjax.train.optim import make_optimizer
from genjax.train.state import TrainState, create_train_state
from genjax.train.step import make_eval_step, make_train_step

# Offsets folded into the run key for the evaluation and sampling keys, so that they
# never collide with a step key (`fold_in(run_key, step)`).
EVAL_STREAM = 2**30
SAMPLE_STREAM = 2**30 + 1


class Experiment:
  """Everything a run needs, built once from `config` (see `configs/default.py`)."""

  def __init__(self, config: Any, mesh: jax.sharding.Mesh | None = None):
    self.config = config
    self.info, self.splits = data_lib.load_dataset(config.data)
    self.family = models.get_family(config.model, self.info)
    self.mesh = mesh if mesh is not None else sharding.make_mesh(config.num_devices)
    sharding.check_batch_size(config.train.batch_size, self.mesh, "train.batch_size")
    sharding.check_batch_size(config.eval.batch_size, self.mesh, "eval.batch_size")
    if config.train.num_steps < 0:
      raise ValueError(f"train.num_steps must be >= 0, got {config.train.num_steps}")
    schedule_steps = config.optim.schedule_steps or config.train.num_steps
    if getattr(self.family, "two_player", False):  # GANs: one optimizer per player
      self.tx = two_player.make_two_player_optimizer(config.optim, schedule_steps, self.family.d_steps)
    else:
      self.tx = make_optimizer(config.optim, schedule_steps)
    self.process_index = jax.process_index()
    self.process_count = jax.process_count()
    self._eval_steps: dict = {}

  # ------------------------------------------------------------------ state

  def example_batch(self, size: int | None = None) -> dict[str, np.ndarray]:
    size = size or self.config.train.batch_size
    return self.splits["train"][np.arange(size) % len(self.splits["train"])]

  def run_key(self) -> jax.Array:
    return jax.random.key(self.config.seed)

  def init_state(self) -> TrainState:
    """A fresh state from the config seed, replicated over the mesh."""
    init_key, run_key = jax.random.split(self.run_key())
    batch = self.example_batch(self.mesh.devices.size)

    def init():
      params, model_state = self.family.init(init_key, batch)
      return create_train_state(params, model_state, self.tx, run_key)

    return jax.jit(init, out_shardings=sharding.replicated(self.mesh))()

  def train_step(self):
    tc = self.config.train
    if getattr(self.family, "two_player", False):
      return two_player.make_two_player_step(
        self.family, self.tx, tc.ema_decay, self.mesh, tc.batch_size, ema_warmup=tc.ema_warmup
      )
    return make_train_step(self.family, self.tx, tc.ema_decay, self.mesh, ema_warmup=tc.ema_warmup)

  def checkpointer(self, workdir: str, **kwargs: Any) -> Checkpointer:
    c = self.config.checkpoint
    return Checkpointer(
      os.path.join(workdir, "checkpoints"),
      keep=c.keep,
      best_metric=f"test/{self.family.best_metric}",
      best_mode=self.family.best_mode,
      **kwargs,
    )

  def checkpoint_reader(self, workdir: str) -> CheckpointReader:
    """Read-only access to the run's checkpoints (evaluate, sample, benchmarks): never writes."""
    return Checkpointer.reader(
      os.path.join(workdir, "checkpoints"),
      best_metric=f"test/{self.family.best_metric}",
      best_mode=self.family.best_mode,
    )

  def restore(self, workdir: str, which: str | int | None = "latest") -> tuple[TrainState, int]:
    """The state of checkpoint `which` ('latest', 'best' or a step) in `workdir`, and its step.

    Read-only; damaged checkpoints are skipped with a log line ('latest' and 'best' fall
    back to the previous complete one). Raises FileNotFoundError (`NoCheckpointError`),
    saying what exists, when there is no usable checkpoint.
    """
    with self.checkpoint_reader(workdir) as ckpt:
      state, meta = ckpt.load(self.init_state(), which)
    return state, int(meta["step"])

  def batch_iterator(self, position: int = 0) -> data_lib.BatchIterator:
    return data_lib.BatchIterator(
      self.splits["train"],
      self.config.train.batch_size,
      seed=self.config.seed,
      position=position,
      shuffle=True,
      process_index=self.process_index,
      process_count=self.process_count,
    )

  def shard(self, host_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    data_lib.validate_batch(host_batch, self.info)
    return sharding.shard_batch(host_batch, self.mesh)

  def eval_params(self, state: TrainState) -> Any:
    return state.ema_params if self.config.eval.use_ema else state.params

  # ------------------------------------------------------------------ evaluation

  def eval_key(self) -> jax.Array:
    return jax.random.fold_in(self.run_key(), EVAL_STREAM)

  def sample_key(self) -> jax.Array:
    return jax.random.fold_in(self.run_key(), SAMPLE_STREAM)

  def evaluate(
    self, params: Any, model_state: Any, split: str = "test", key: jax.Array | None = None, **options: Any
  ) -> dict[str, float]:
    """Means of the family's per-example metrics over the whole split (exact, padding masked)."""
    opts = tuple(sorted(options.items()))
    if opts not in self._eval_steps:
      self._eval_steps[opts] = make_eval_step(self.family, self.mesh, **options)
    eval_step = self._eval_steps[opts]
    key = self.eval_key() if key is None else key
    source = self.splits[split]
    totals = None
    for i, (batch, mask) in enumerate(
      data_lib.eval_batches(source, self.config.eval.batch_size, self.process_index, self.process_count)
    ):
      shard = self.shard(batch)
      mask = sharding.shard_batch({"mask": mask}, self.mesh)["mask"]
      sums = eval_step(params, model_state, shard, mask, jax.random.fold_in(key, i))
      if sharding.one_step_in_flight(self.mesh):
        jax.block_until_ready(sums)
      totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
    totals = jax.device_get(totals)
    return {k: float(v) / len(source) for k, v in totals.items()}

  def write_config(self, workdir: str) -> str:
    path = os.path.join(workdir, "config.json")
    if self.process_index == 0:
      os.makedirs(workdir, exist_ok=True)
      with open(path, "w") as f:
        f.write(self.config.to_json_best_effort(indent=2, sort_keys=True))
    return path
