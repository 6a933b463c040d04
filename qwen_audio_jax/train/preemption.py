"""SIGTERM/SIGINT → stop at the next step boundary, on every process at the same step."""

from __future__ import annotations

import logging
import signal

import jax
import numpy as np
from jax.experimental import multihost_utils


class StopSignal:
  """Records a termination signal; `should_stop()` is the all-process agreement (call on all hosts)."""

  def __init__(self, signals=(signal.SIGTERM,)):
    self.received = None
    self._previous = {}
    for s in signals:
      self._previous[s] = signal.signal(s, self._handle)

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    if self.received is None:
      logging.warning("received %s: will checkpoint and exit at the next step boundary",
                      signal.Signals(signum).name)
    self.received = signum

  def should_stop(self) -> bool:
    local = self.received is not None
    if jax.process_count() == 1:
      return local
    flags = multihost_utils.process_allgather(np.array([local], np.int32))
    return bool(np.any(flags))

  def restore(self) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
