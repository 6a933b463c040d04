"""SIGTERM / Ctrl-C → stop at the next step boundary, on every process at the same step.

The first SIGTERM or SIGINT (Ctrl-C) asks for a clean stop: the loop saves a checkpoint at the next step
boundary and the CLI exits 0. A second Ctrl-C gives up at once (KeyboardInterrupt; the default handler
is back, so a third one kills the process outright). A handler can run inside a callback that swallows
exceptions (e.g. a garbage-collection hook), so the loop also calls `check_abort()` every step.
"""

from __future__ import annotations

import logging
import signal

import jax
import numpy as np
from jax.experimental import multihost_utils


class StopSignal:
  """Records a termination signal; `should_stop()` is the all-process agreement (call on all hosts)."""

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
    self.received = None
    self.aborted = False
    self._previous = {}
    for s in signals:
      self._previous[s] = signal.signal(s, self._handle)

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    if self.received is not None and signum == signal.SIGINT:
      self.aborted = True
      signal.signal(signal.SIGINT, signal.SIG_DFL)
      raise KeyboardInterrupt("second interrupt: stopping now, without a checkpoint")
    if self.received is None:
      how = "press Ctrl-C again to stop at once" if signum == signal.SIGINT else "checkpoint and exit 0"
      logging.warning("received %s: will checkpoint and exit at the next step boundary (%s)",
                      signal.Signals(signum).name, how)
    self.received = signum

  def check_abort(self) -> None:
    """Raises KeyboardInterrupt after a second Ctrl-C (in case the handler's own raise was swallowed)."""
    if self.aborted:
      raise KeyboardInterrupt("second interrupt: stopping now, without a checkpoint")

  def should_stop(self) -> bool:
    local = self.received is not None
    if jax.process_count() == 1:
      return local
    flags = multihost_utils.process_allgather(np.array([local], np.int32))
    return bool(np.any(flags))

  def restore(self) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
