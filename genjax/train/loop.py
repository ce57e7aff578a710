"""The training loop: steps, logging, periodic evaluation, sample grids and checkpoints, run safely.

`train_and_evaluate(config, workdir)` is the workdir's one writer:

1. It takes the workdir's lock (`genjax.train.workdir.lock_workdir`): a second trainer on
   the same workdir stops at once, naming the running process.
2. On resume it compares the config with the run's saved `config.json` and refuses keys
   that may not change (`workdir.check_resume`: model, data, seed, optimizer, batch...)
   in one line listing them; allowed changes (more steps, other intervals) are logged.
3. It restores the latest complete checkpoint (damaged ones are moved aside with a log
   line and the previous one is used) and only then writes `config.json`, once and
   atomically, so a failed start never changes it.
4. Every interval it checks the step metrics for NaN/inf (one transfer per interval),
   logs, evaluates, writes a sample grid (to a PNG and TensorBoard) and checkpoints;
   the checkpointer refuses any state with a non-finite leaf, so the last saved
   checkpoint is always good.

Errors a user can act on are exceptions with one-line messages (`NonFiniteLossError`,
`checkpoint.NonFiniteStateError`, `checkpoint.CheckpointWriteError`, `ResumeConfigError`,
`workdir.WorkdirBusyError`); `genjax.cli.train` prints them without a traceback.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import Any

import jax
import numpy as np

from genjax import distributed, hugepages, xla_flags
from genjax.eval import render
from genjax.nn import native
from genjax.schema import UsageError
from genjax.train import sharding
from genjax.train import workdir as workdir_lib
from genjax.train.checkpoint import CheckpointMismatchError, NoCheckpointError
from genjax.train.experiment import Experiment
from genjax.train.metric_writer import MetricWriter
from genjax.train.state import param_overview

log = logging.getLogger("genjax")


class NonFiniteLossError(RuntimeError):
  """Raised when the training loss or a metric becomes NaN or inf."""


class ResumeConfigError(UsageError):
  """The config differs from the run's saved config in keys that may not change on resume."""


def _due(step: int, every: int, last: bool) -> bool:
  return last or (every > 0 and step % every == 0)


def _config_json(config: Any) -> str:
  return config.to_json_best_effort(indent=2, sort_keys=True)


def train_and_evaluate(config: Any, workdir: str, mesh: jax.sharding.Mesh | None = None) -> dict:
  """Trains `config` in `workdir`, resuming from its latest complete checkpoint if there is one.

  Returns the last test metrics (`{}` if there was nothing left to train). Raises
  `NonFiniteLossError` if the loss becomes NaN or inf; the last checkpoint saved
  before that point stays in place, so the run can be inspected or resumed.
  """
  is_chief = jax.process_index() == 0
  lock, error = None, None
  if is_chief:  # one lock per run; with several processes, process 0 holds it for all
    try:
      lock = workdir_lib.lock_workdir(workdir)
    except (workdir_lib.WorkdirBusyError, workdir_lib.WorkdirError) as e:
      error = e
  distributed.agree(error, f"locking workdir {workdir}")  # every process stops alike if process 0 could not
  try:
    return _train(config, workdir, mesh, is_chief)
  finally:
    if lock is not None:
      lock.release()


def _train(config: Any, workdir: str, mesh, is_chief: bool) -> dict:
  saved = workdir_lib.load_saved_config(workdir)
  exp = Experiment(config, mesh)
  tc = exp.run.train
  with exp.checkpointer(workdir) as ckpt:
    restored = bool(ckpt.shared_steps())  # process 0's listing, on every process
    if saved is not None and restored:
      bad = workdir_lib.check_resume(saved, config)
      if bad:
        raise ResumeConfigError(
          f"the config differs from the run saved in {workdir} in keys that may not change on resume: "
          f"{workdir_lib.format_changes(saved, config, bad)} (use a new --workdir, or the saved values)"
        )
      changed = workdir_lib.changed_keys(saved, config)
      if changed:
        log.info("resuming with changed settings: %s", workdir_lib.format_changes(saved, config, changed))
      horizon = workdir_lib.horizon_change(saved, config)
      if horizon:
        log.warning("%s", horizon)
    state, position = None, 0
    if restored:
      try:  # the latest complete checkpoint, past damaged ones (moved aside with a log line)
        state, meta = ckpt.load(exp.abstract_state(), "latest")
        position = meta["data_position"]
        log.info("resuming from step %d (data position %d) in %s", meta["step"], position, ckpt.directory)
      except NoCheckpointError:
        restored = False
        log.warning("no usable checkpoint left in %s; starting from step 0", ckpt.directory)
      except CheckpointMismatchError as e:
        raise UsageError(str(e)) from e
    if state is None:
      state = exp.init_state()
    if is_chief:  # the run's truth: written once, after a successful start, never by a failed one
      workdir_lib.commit_config(workdir, _config_json(config), replace=not restored)
    start = int(jax.device_get(state.step))
    if start >= tc.num_steps:
      log.info("step %d already reached (train.num_steps=%d): nothing to do", start, tc.num_steps)
      return {}
    log.info(
      "XLA flags: %s; %s; genjax CPU kernels: %s", xla_flags.describe(), hugepages.describe(), native.status()
    )
    log.info(
      "training %s on %d %s device(s) in %d process(es), global batch %d, from step %d to %d",
      exp.family.name,
      exp.mesh.devices.size,
      exp.mesh.devices.flat[0].platform,
      exp.process_count,
      tc.batch_size,
      start,
      tc.num_steps,
    )
    if start == 0:
      log.info("parameters:\n%s", param_overview(state.params))
    return _loop(exp, state, position, start, ckpt, workdir, is_chief)


def _loop(exp: Experiment, state, position: int, start: int, ckpt, workdir: str, is_chief: bool) -> dict:
  tc = exp.run.train
  train_step = exp.train_step()
  sync_steps = sharding.one_step_in_flight(exp.mesh)
  sample_grid = jax.jit(exp.family.sample_grid, static_argnames="num")
  num_samples = exp.run.eval.num_samples
  grid_batch = exp.examples("test", num_samples)  # class-balanced, fixed for the whole run
  extent = None if exp.family.images else render.extent(exp.examples("test", 2000)["x"])
  batches = exp.batch_iterator(position)
  writer = MetricWriter(workdir, enable_tensorboard=tc.tensorboard) if is_chief else None
  if writer and start == 0:
    writer.write_config(workdir_lib.flatten_config(workdir_lib.load_saved_config(workdir) or {}))
  bar = is_chief and tc.progress_bar and sys.stderr.isatty()  # log lines instead when stderr is a file
  progress = _progress(start, tc.num_steps, enabled=bar)
  profile = _Profiler(os.path.join(workdir, "profile"), start + 1, tc.profile_steps) if is_chief else None
  pending, t0, s0, paused = [], time.perf_counter(), start, 0.0  # per-step metrics, still on device
  checked = start  # the last step whose metrics were checked for NaN/inf
  test_metrics: dict = {}
  try:
    for step in range(start, tc.num_steps):
      if profile:
        profile.before(step)
      state, metrics = train_step(state, exp.shard(next(batches)))
      if sync_steps:
        jax.block_until_ready(state.step)
      if profile:
        profile.after(step, state)
      pending.append(metrics)
      s = step + 1
      last = s == tc.num_steps
      log_now = _due(s, tc.log_every, last)
      ckpt_now = _due(s, tc.checkpoint_every, last)
      eval_now = _due(s, tc.eval_every, last)
      if log_now or ckpt_now or eval_now:
        # One transfer per interval (not a sync per step); every step since the last
        # check is looked at, so a non-finite loss is caught before the next checkpoint.
        fetched = jax.device_get(pending)
        first, pending, checked = checked + 1, [], s
        means = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
        bad = [k for k, v in means.items() if not math.isfinite(v)]
        if bad:
          last_saved = ckpt.latest_step()
          kept = (
            f"the last saved checkpoint, step {last_saved}," if last_saved else "no checkpoint was saved; nothing"
          )
          raise NonFiniteLossError(
            f"non-finite {', '.join(bad)} in steps {first} to {s}; stopping. {kept} is kept in {ckpt.directory}. "
            f"Lower optim.learning_rate or set optim.grad_clip."
          )
        if log_now:
          now = time.perf_counter()
          means["steps_per_sec"] = (s - s0) / max(now - t0 - paused, 1e-9)  # training time only
          t0, s0, paused = now, s, 0.0
          if writer:
            writer.write(s, "train", means)
          if bar:
            progress.set_postfix(loss=f"{means['loss']:.4g}", steps_per_s=f"{means['steps_per_sec']:.1f}")
          elif is_chief:
            log.info("step %d/%d loss %.5g (%.2f steps/s)", s, tc.num_steps, means["loss"], means["steps_per_sec"])
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
        grid = distributed.to_host(grid)  # whole on every process (a collective where it is split)
        if is_chief:
          render.save_figure(os.path.join(workdir, "samples", f"step_{s:07d}.png"), grid, extent)
          if writer:
            writer.write_image(s, "samples", render.picture(grid, extent))
      if ckpt_now:
        ckpt.save(state, batches.position, test_metrics_now)  # refuses a non-finite state
      paused += time.perf_counter() - t_aside  # evaluation, sampling, checkpointing
      progress.update(1)
  finally:
    batches.close()
    progress.close()
    if profile:
      profile.stop()
    if writer:
      writer.close()
  return test_metrics


class _Profiler:
  """`train.profile_steps` > 0: a `jax.profiler` trace of that many steps after the first (compiling) one,
  written to `WORKDIR/profile` (TensorBoard's profile plugin, or the `.trace.json.gz` in Perfetto)."""

  def __init__(self, directory: str, first: int, num: int):
    self.directory, self.first, self.last, self.active = directory, first, first + num, False

  def before(self, step: int) -> None:
    if step == self.first and self.last > self.first:
      jax.profiler.start_trace(self.directory, create_perfetto_trace=True)
      self.active = True

  def after(self, step: int, state) -> None:
    if self.active and step + 1 == self.last:
      jax.block_until_ready(state)
      self.stop()
      log.info("profile of steps %d to %d written to %s", self.first + 1, self.last, self.directory)

  def stop(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False


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
