"""Metrics, pictures and the config to TensorBoard event files, and metrics to a JSON-lines file.

`MetricWriter(workdir)` writes (the chief process only):

* scalars to `workdir/tensorboard/` (tags `train/<name>`, `test/<name>`) and to
  `workdir/metrics.jsonl`, one `{"step": int, "split": str, <name>: float, ...}` per line;
* pictures (`write_image`): the periodic sample grids, tag `samples`, in TensorBoard's
  IMAGES tab;
* the resolved config (`write_config`): every key and value as a table in the TEXT tab
  and as hyperparameters in the HPARAMS tab.

View a run with `tensorboard --logdir WORKDIR/tensorboard` (or `--logdir runs` for all).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np


class MetricWriter:
  """Writes scalars, images and the config of one run (see the module docstring)."""

  def __init__(self, workdir: str, enable_tensorboard: bool = True):
    os.makedirs(workdir, exist_ok=True)
    self.workdir = workdir
    self._warned = False  # a failure to write TensorBoard events is reported once
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if enable_tensorboard:
      from tensorboardX import SummaryWriter

      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), flush_secs=30)

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    values = {k: float(np.asarray(v)) for k, v in metrics.items()}
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": int(step), "split": split, **values}) + "\n")
    if self._tb is not None:
      for k, v in values.items():
        self._tb.add_scalar(f"{split}/{k}", v, int(step))

  def write_image(self, step: int, tag: str, image: np.ndarray) -> None:
    """A `uint8[H, W, C]` picture (C = 1 or 3) at `step`."""
    if self._tb is not None:
      image = np.asarray(image)
      if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
      self._tb.add_image(tag, image, int(step), dataformats="HWC")

  def write_config(self, flat: Mapping[str, Any]) -> None:
    """The resolved config, `{dotted key: value}`, as a text table and as hyperparameters."""
    if self._tb is None:
      return
    rows = "\n".join(f"| `{k}` | `{v!r}` |" for k, v in sorted(flat.items()))
    self._tb.add_text("config", "| key | value |\n|---|---|\n" + rows, 0)
    from tensorboardX.summary import hparams

    values = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat.items()}
    for summary in hparams(values, {}):  # the HPARAMS plugin's three summaries, in this run's own file
      self._tb.file_writer.add_summary(summary)

  def flush(self) -> None:
    if self._tb is not None:
      try:
        self._tb.flush()
      except OSError as e:  # a full disk: metrics.jsonl and the checkpoints report it themselves
        self._warn_once(e)

  def close(self) -> None:
    """Closes the TensorBoard writer. A failure to write its last events (a full disk) is one
    warning line, so that it never replaces the error that is stopping the run."""
    if self._tb is not None:
      tb, self._tb = self._tb, None
      try:
        tb.close()
      except OSError as e:
        self._warn_once(e)

  def _warn_once(self, error: OSError) -> None:
    if not self._warned:
      self._warned = True
      logging.getLogger("genjax").warning(
        "TensorBoard events not written to %s/tensorboard: %s", self.workdir, error
      )


def read_metrics(workdir: str) -> list[dict]:
  """All records of `workdir/metrics.jsonl`, in order."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
