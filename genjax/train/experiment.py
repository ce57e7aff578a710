"""An experiment assembled from its config: data, family, mesh, optimizer and state.

`experiments.train`, `experiments.evaluate`, `experiments.sample` and the benchmarks
all build the same `Experiment`, so they agree on shapes, keys and shardings. It
talks to the family only through the contract of `genjax.models.base.Family`.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from genjax import data as data_lib
from genjax import models
from genjax.data.select import balanced_examples, balanced_indices, subset
from genjax.models.base import Evaluation
from genjax.schema import ConfigError, UsageError
from genjax.train import config as run_config
from genjax.train import sharding
from genjax.train.checkpoint import Checkpointer, CheckpointReader
from genjax.train.state import TrainState, create_train_state
from genjax.train.step import make_eval_step, make_train_step

# Offsets folded into the run key for the evaluation and sampling keys, so that they
# never collide with a step key (`fold_in(run_key, step)`).
EVAL_STREAM = 2**30
SAMPLE_STREAM = 2**30 + 1


class Experiment:
  """Everything a run needs, built once from `config` (see `genjax/configs/default.py`).

  Raises `genjax.schema.ConfigError` (one line naming the key) for any invalid value,
  before anything heavy is built.
  """

  def __init__(self, config: Any, mesh: jax.sharding.Mesh | None = None):
    self.config = config
    family_cls = models.family_class(config.model.family)
    self.run = run_config.validate(config, family_cls)
    try:
      self.info, self.splits = data_lib.load_dataset(config.data)
      self.family = family_cls(config, self.info)
    except UsageError:
      raise
    except ValueError as e:  # a dataset or a family refusing this config: the user's to fix
      raise UsageError(str(e)) from e
    if mesh is None:
      try:  # num_devices counts the devices of every process (see sharding.mesh_devices)
        mesh = sharding.make_mesh(self.run.num_devices)
      except ValueError as e:
        raise UsageError(str(e)) from e
    self.mesh = mesh
    devices, multiple = self.mesh.devices.size, self.family.batch_multiple()
    if self.run.train.batch_size % (devices * multiple):
      why = f"{devices} device(s)" + (f" x {multiple}, the family's batch multiple" if multiple > 1 else "")
      raise ConfigError(
        "train.batch_size",
        f"={self.run.train.batch_size} is not valid: expected a multiple of {devices * multiple} ({why})",
      )
    if self.run.eval.batch_size % devices:
      raise ConfigError(
        "eval.batch_size",
        f"={self.run.eval.batch_size} is not valid: expected a multiple of the {devices} device(s)",
      )
    schedule_steps = self.family.optim_config.schedule_steps or self.run.train.num_steps
    self.tx = self.family.make_optimizer(schedule_steps)
    self.process_index = jax.process_index()
    self.process_count = jax.process_count()
    self._eval_steps: dict = {}

  # ------------------------------------------------------------------ state

  def example_batch(self, size: int | None = None) -> dict[str, np.ndarray]:
    size = size or self.run.train.batch_size
    return self.splits["train"][np.arange(size) % len(self.splits["train"])]

  def run_key(self) -> jax.Array:
    return jax.random.key(self.run.seed)

  def _init(self):
    init_key, run_key = jax.random.split(self.run_key())
    batch = self.example_batch(self.mesh.devices.size * self.family.batch_multiple())

    def init():
      params, model_state = self.family.init(init_key, batch)
      return create_train_state(params, model_state, self.tx, run_key)

    return jax.jit(init, out_shardings=sharding.replicated(self.mesh))

  def init_state(self) -> TrainState:
    """A fresh state from the config seed, replicated over the mesh."""
    return self._init()()

  def abstract_state(self) -> TrainState:
    """`init_state`'s structure, shapes, dtypes and shardings (`jax.ShapeDtypeStruct` leaves)
    without computing it: the target a checkpoint is restored onto. Tracing is all it
    costs; compiling the initializer took 7 s of a RealNVP `evaluate` process."""
    return self._init().eval_shape()

  def train_step(self):
    tc = self.run.train
    return make_train_step(self.family, self.tx, tc.ema_decay, self.mesh, ema_warmup=tc.ema_warmup)

  def checkpointer(self, workdir: str, **kwargs: Any) -> Checkpointer:
    return Checkpointer(
      os.path.join(workdir, "checkpoints"),
      keep=self.run.checkpoint.keep,
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
      state, meta = ckpt.load(self.abstract_state(), which)
    return state, int(meta["step"])

  def batch_iterator(self, position: int = 0) -> data_lib.BatchIterator:
    return data_lib.BatchIterator(
      self.splits["train"],
      self.run.train.batch_size,
      seed=self.run.seed,
      position=position,
      shuffle=True,
      process_index=self.process_index,
      process_count=self.process_count,
    )

  def shard(self, host_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    data_lib.validate_batch(host_batch, self.info)
    return sharding.shard_batch(host_batch, self.mesh)

  def eval_params(self, state: TrainState) -> Any:
    return state.ema_params if self.run.eval.use_ema else state.params

  def examples(self, split: str, num: int, seed: int = 0) -> dict[str, np.ndarray]:
    """`num` examples of `split`, a fixed class-balanced choice (repeated if the split is smaller)."""
    return balanced_examples(self.splits[split], num, seed)

  # ------------------------------------------------------------------ evaluation

  def eval_key(self) -> jax.Array:
    return jax.random.fold_in(self.run_key(), EVAL_STREAM)

  def sample_key(self) -> jax.Array:
    return jax.random.fold_in(self.run_key(), SAMPLE_STREAM)

  def evaluation_source(self, split: str, evaluation: Evaluation) -> Any:
    """The examples `evaluation` scores: the split, or a fixed class-balanced choice of `max_examples`."""
    source = self.splits[split]
    if 0 < evaluation.max_examples < len(source):
      idx = balanced_indices(_labels(source), evaluation.max_examples, 0, num_examples=len(source))
      return subset(source, np.sort(idx))
    return source

  def evaluate(
    self,
    params: Any,
    model_state: Any,
    split: str = "test",
    key: jax.Array | None = None,
    evaluation: Evaluation | None = None,
  ) -> dict[str, float]:
    """Means of the family's per-example metrics over `split` (exact: padding is masked).

    `evaluation` (default: none) gives `evaluate`'s options and how many examples to
    score (see `Evaluation`).
    """
    evaluation = evaluation or Evaluation()
    opts = tuple(sorted(evaluation.options.items()))
    if opts not in self._eval_steps:
      self._eval_steps[opts] = make_eval_step(self.family, self.mesh, **evaluation.options)
    eval_step = self._eval_steps[opts]
    key = self.eval_key() if key is None else key
    source = self.evaluation_source(split, evaluation)
    batch_size = evaluation.batch_size or self.run.eval.batch_size
    devices = self.mesh.devices.size  # every process's devices (the mesh is global)
    # A split smaller than a batch is scored in one batch no larger than needed: padded
    # rows cost as much as real ones (T network calls each for a diffusion bound).
    batch_size = min(batch_size, -(-len(source) // devices) * devices)
    totals = None
    for i, (batch, mask) in enumerate(
      data_lib.eval_batches(source, batch_size, self.process_index, self.process_count)
    ):
      shard = self.shard(batch)
      mask = sharding.shard_batch({"mask": mask}, self.mesh)["mask"]
      sums = eval_step(params, model_state, shard, mask, jax.random.fold_in(key, i))
      if sharding.one_step_in_flight(self.mesh):
        jax.block_until_ready(sums)
      totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
    totals = jax.device_get(totals)
    return {k: float(v) / len(source) for k, v in totals.items()}


def _labels(source: Any) -> np.ndarray | None:
  """The labels of every example of `source`, or None for unlabelled data."""
  return source[np.arange(len(source))].get("label")
