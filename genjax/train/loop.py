"""The training loop: steps, logging, periodic evaluation, sample grids and checkpoints."""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import jax
import numpy as np

from genjax.eval import render
from genjax.train import sharding
from genjax.train.checkpoint import NoCheckpointError
from genjax.train.experiment import Experiment
from genjax.train.metric_writer import MetricWriter

log = logging.getLogger("genjax")


class NonFiniteLossError(RuntimeError):
  """Raised when the training loss or a metric becomes NaN or inf."""


def _due(step: int, every: int, last: bool) -> bool:
  return last or (every > 0 and step % every == 0)


def train_and_evaluate(config: Any, workdir: str, mesh: jax.sharding.Mesh | None = None) -> dict:
  """Trains `config` in `workdir`, resuming from its latest checkpoint if there is one.

  Returns the last test metrics (`{}` if there was nothing left to train). Raises
  `NonFiniteLossError` if the loss becomes NaN or inf; the last checkpoint saved
  before that point stays in place, so the run can be inspected or resumed.
  """
  exp = Experiment(config, mesh)
  tc = exp.run.train
  is_chief = exp.process_index == 0
  exp.write_config(workdir)
  ckpt = exp.checkpointer(workdir)
  state = exp.init_state()
  position = 0
  if ckpt.all_steps():
    try:  # the latest complete checkpoint, past damaged ones (moved aside with a log line)
      state, meta = ckpt.load(state, "latest")
      position = meta["data_position"]
      log.info("resuming from step %d (data position %d) in %s", meta["step"], position, ckpt.directory)
    except NoCheckpointError:
      log.warning("no usable checkpoint left in %s; starting from step 0", ckpt.directory)
  start = int(jax.device_get(state.step))
  if start >= tc.num_steps:
    log.info("step %d already reached (train.num_steps=%d): nothing to do", start, tc.num_steps)
    ckpt.close()
    return {}

  log.info(
    "training %s on %d %s device(s), global batch %d, from step %d to %d",
    exp.family.name,
    exp.mesh.devices.size,
    exp.mesh.devices.flat[0].platform,
    tc.batch_size,
    start,
    tc.num_steps,
  )
  train_step = exp.train_step()
  sync_steps = sharding.one_step_in_flight(exp.mesh)
  sample_grid = jax.jit(exp.family.sample_grid, static_argnames="num")
  num_samples = exp.run.eval.num_samples
  grid_batch = exp.examples("test", num_samples)  # class-balanced, fixed for the whole run
  extent = None if exp.family.images else render.extent(exp.examples("test", 2000)["x"])
  batches = exp.batch_iterator(position)
  writer = MetricWriter(workdir, enable_tensorboard=tc.tensorboard) if is_chief else None
  progress = _progress(start, tc.num_steps, enabled=is_chief and tc.progress_bar)
  pending, t0, s0, paused = [], time.perf_counter(), start, 0.0  # per-step metrics, still on device
  checked = start  # the last step whose metrics were checked for NaN/inf
  test_metrics: dict = {}
  try:
    for step in range(start, tc.num_steps):
      state, metrics = train_step(state, exp.shard(next(batches)))
      if sync_steps:
        jax.block_until_ready(state.step)
      pending.append(metrics)
      s = step + 1
      last = s == tc.num_steps
      log_now = _due(s, tc.log_every, last)
      ckpt_now = _due(s, tc.checkpoint_every, last)
      eval_now = _due(s, tc.eval_every, last)
      if log_now or ckpt_now or eval_now:
        # One transfer per interval (not a sync per step); every step since the last
        # check is looked at, so nothing non-finite is ever checkpointed.
        fetched = jax.device_get(pending)
        first, pending, checked = checked + 1, [], s
        means = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
        bad = [k for k, v in means.items() if not math.isfinite(v)]
        if bad:
          raise NonFiniteLossError(
            f"non-finite {', '.join(bad)} in steps {first} to {s} "
            f"(train metrics {means}); stopping. The last good checkpoint (step {ckpt.latest_step()}) is kept "
            f"in {ckpt.directory}. Lower optim.learning_rate or set optim.grad_clip."
          )
        if log_now:
          now = time.perf_counter()
          means["steps_per_sec"] = (s - s0) / max(now - t0 - paused, 1e-9)  # training time only
          t0, s0, paused = now, s, 0.0
          if writer:
            writer.write(s, "train", means)
          progress.set_postfix(loss=f"{means['loss']:.4g}", steps_per_s=f"{means['steps_per_sec']:.1f}")
      test_metrics_now, t_aside = None, time.perf_counter()
      if eval_now:
        test_metrics = exp.evaluate(exp.eval_params(state), state.model_state)
        test_metrics_now = {f"test/{k}": v for k, v in test_metrics.items()}
        if writer:
          writer.write(s, "test", test_metrics)
        log.info("step %d test %s", s, test_metrics)
      if _due(s, tc.sample_every, last):  # every process computes (global arrays); the chief writes
        grid = sample_grid(
          exp.eval_params(state), state.model_state, exp.sample_key(), grid_batch, num=num_samples
        )
        if is_chief:
          render.save_figure(os.path.join(workdir, "samples", f"step_{s:07d}.png"), grid, extent)
      if ckpt_now:
        ckpt.save(state, batches.position, test_metrics_now)
      paused += time.perf_counter() - t_aside  # evaluation, sampling, checkpointing
      progress.update(1)
  finally:
    batches.close()
    progress.close()
    ckpt.close()
    if writer:
      writer.close()
  return test_metrics


class _NoProgress:
  def update(self, n):
    pass

  def set_postfix(self, **kw):
    pass

  def close(self):
    pass


def _progress(start: int, total: int, enabled: bool):
  if not enabled:
    return _NoProgress()
  from tqdm import tqdm

  return tqdm(initial=start, total=total, desc="train", unit="step", mininterval=2.0, dynamic_ncols=True)
