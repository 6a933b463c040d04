"""Run summaries for TensorBoard through tensorboardX: scalars, histograms, audio and text.

  writer = open_writer(logdir)          # `open_writer(None)` → a writer that drops everything
  writer.scalars(step, {"loss": 2.3, "lr": 1e-4})
  writer.histogram(step, "grad_norms/decoder", per_layer_norms)
  writer.audio(step, "eval/sample_0", wave, sample_rate=16000)   # eval code: the clip ...
  writer.text(step, "eval/answer_0", "The person says ...")      # ... and the generated answer
  writer.close()

Files are `logdir/events.out.tfevents.*` (`tensorboard --logdir WORKDIR/tensorboard`).
"""

from __future__ import annotations

import functools
import sys
from typing import Mapping

import numpy as np


@functools.lru_cache(maxsize=1)
def _tensorboardx():
  """`import tensorboardX` without importing torch: tensorboardX tries `import torch` at import time
  (only to accept torch tensors; we pass numpy), which would pull torch into every training process
  of an environment that also has the converter's dependencies installed."""
  blocked = "torch" not in sys.modules
  if blocked:
    sys.modules["torch"] = None  # `import torch` raises ImportError, which tensorboardX handles
  try:
    import tensorboardX  # pylint: disable=import-outside-toplevel
  finally:
    if blocked:
      del sys.modules["torch"]
  return tensorboardX


class SummaryWriter:
  """Appends summaries to one event file under `logdir` (process 0 only; the caller decides)."""

  def __init__(self, logdir: str, flush_secs: int = 30):
    self._writer = _tensorboardx().SummaryWriter(logdir=logdir, flush_secs=flush_secs)
    self.logdir = logdir

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    for tag, value in values.items():
      self._writer.add_scalar(tag, float(value), global_step=int(step))

  def histogram(self, step: int, tag: str, values) -> None:
    values = np.asarray(values, np.float64).reshape(-1)
    values = values[np.isfinite(values)]
    if values.size:
      self._writer.add_histogram(tag, values, global_step=int(step), bins="auto")

  def audio(self, step: int, tag: str, wave, sample_rate: int = 16000) -> None:
    """A mono waveform (float in [-1, 1]); clipped to that range."""
    wave = np.clip(np.asarray(wave, np.float32).reshape(-1), -1.0, 1.0)
    self._writer.add_audio(tag, wave, global_step=int(step), sample_rate=int(sample_rate))

  def text(self, step: int, tag: str, text: str) -> None:
    self._writer.add_text(tag, str(text), global_step=int(step))

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class NullWriter:
  """Same API, writes nothing (TensorBoard off, or not process 0)."""

  logdir = None

  def scalars(self, step, values) -> None:
    del step, values

  def histogram(self, step, tag, values) -> None:
    del step, tag, values

  def audio(self, step, tag, wave, sample_rate=16000) -> None:
    del step, tag, wave, sample_rate

  def text(self, step, tag, text) -> None:
    del step, tag, text

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass


def open_writer(logdir: str | None) -> SummaryWriter | NullWriter:
  """A tensorboardX-backed writer for `logdir`, or a `NullWriter` when `logdir` is None."""
  return NullWriter() if logdir is None else SummaryWriter(logdir)
