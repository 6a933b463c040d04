"""Per-host hang watchdog: dumps every thread's Python stack and exits non-zero when a step stalls.

A stuck rank blocks every other host in the next collective forever (jax#38503); the coordination
service only notices dead processes. The loop reports progress at its synchronisation points (when it
reads the metrics of the steps it has dispatched); the watchdog thread fires when nothing completes for
longer than

    limit = max(min_timeout_s, factor × median step time) × steps in flight        (capped by ceiling_s)

The median is over completed steps after the first `warmup_steps` (compiles are timed apart and never
count). Before enough steps, and during evaluation and checkpoint saves, only `ceiling_s` applies
(0 disables it). On firing: faulthandler dump of all threads to stderr, one line naming the step and
the limit, `os._exit(exit_code)` (no clean-up: a hung collective would never return).
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import statistics
import sys
import threading
import time

EXIT_CODE = 124  # the timeout(1) convention, so launchers read it as "hung"


class Watchdog:
  def __init__(self, factor: float = 10.0, min_timeout_s: float = 300.0, ceiling_s: float = 3600.0,
               warmup_steps: int = 3, poll_s: float = 1.0, exit_code: int = EXIT_CODE, stream=None):
    self.factor, self.min_timeout_s, self.ceiling_s = float(factor), float(min_timeout_s), float(ceiling_s)
    self.warmup_steps, self.poll_s, self.exit_code = int(warmup_steps), float(poll_s), int(exit_code)
    self.stream = stream or sys.stderr
    self._lock = threading.Lock()
    self._samples: list[float] = []
    self._seen = 0  # completed steps, warm-up included
    self._in_flight = 0
    self._last = time.monotonic()
    self._step = 0
    self._phase = "steps"
    self._paused = True  # until the first dispatched step (set-up and the first compile are never timed)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, name="step-watchdog", daemon=True)

  def start(self) -> "Watchdog":
    self._thread.start()
    return self

  def close(self) -> None:
    self._stop.set()

  # ---- called by the training loop ----
  def dispatched(self, step: int) -> None:
    with self._lock:
      if self._paused and self._phase == "steps":
        self._last = time.monotonic()
      self._paused = False
      self._in_flight += 1
      self._step = step

  def completed(self, steps: int, seconds_per_step: float) -> None:
    with self._lock:
      for _ in range(steps):
        self._seen += 1
        if self._seen > self.warmup_steps:
          self._samples.append(float(seconds_per_step))
      self._in_flight = 0
      self._last = time.monotonic()

  @contextlib.contextmanager
  def phase(self, name: str, timed: bool = True):
    """A stretch outside the steps: eval/checkpoint (`timed`: only the ceiling applies) or a compile
    (`timed=False`: not watched)."""
    with self._lock:
      prev, paused = self._phase, self._paused
      self._phase, self._paused, self._last = name, not timed, time.monotonic()
    try:
      yield
    finally:
      with self._lock:
        self._phase, self._paused, self._last = prev, paused, time.monotonic()

  # ---- the watching thread ----
  def limit(self) -> float:
    """Seconds without progress allowed now (inf: nothing applies)."""
    ceiling = self.ceiling_s if self.ceiling_s > 0 else float("inf")
    if self._phase != "steps" or len(self._samples) < 1:
      return ceiling
    per_step = max(self.min_timeout_s, self.factor * statistics.median(self._samples))
    return min(ceiling, per_step * max(1, self._in_flight))

  def _run(self) -> None:
    while not self._stop.wait(self.poll_s):
      with self._lock:
        if self._paused:
          continue
        waited, limit = time.monotonic() - self._last, self.limit()
        step, phase = self._step, self._phase
        median = statistics.median(self._samples) if self._samples else float("nan")
      if waited > limit:
        self._fire(step, phase, waited, limit, median)
        return

  def _fire(self, step, phase, waited, limit, median) -> None:
    where = f"step {step}" if phase == "steps" else f"{phase} after step {step}"
    self.stream.write(f"\nwatchdog: {where} made no progress for {waited:.0f}s (limit {limit:.0f}s: "
                      f"factor {self.factor:g} x median step {median:.3g}s, floor {self.min_timeout_s:g}s, "
                      f"ceiling {self.ceiling_s:g}s); Python stacks of every thread follow, then exit "
                      f"{self.exit_code}\n")
    self.stream.flush()
    faulthandler.dump_traceback(file=self.stream, all_threads=True)
    self.stream.flush()
    os._exit(self.exit_code)  # pylint: disable=protected-access


def from_config(wcfg) -> Watchdog:
  """A watchdog from the run config's `watchdog` block; started unless `enabled` is False (a watchdog that
  is never started accepts the same calls and never fires)."""
  if wcfg is None:
    return Watchdog()
  dog = Watchdog(factor=float(wcfg.factor), min_timeout_s=float(wcfg.min_timeout_s),
                 ceiling_s=float(wcfg.ceiling_s), warmup_steps=int(wcfg.warmup_steps))
  return dog.start() if bool(wcfg.get("enabled", True)) else dog
