"""Shared helpers of the benchmarks: timing, the command line, the table and the JSON line."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable, Sequence


def parser(description: str) -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=description)
  p.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats (about a minute in all)")
  p.add_argument("--output", help="append the JSON result line to this file instead of printing it")
  return p


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, dict]:
  """Seconds per call of each function: `warmup` untimed calls each, then `repeats` rounds that call
  every function once in turn (so a burst of load from other jobs hits all of them alike).
  Returns {name: {"median_s", "min_s", "cpu_median_s", "repeats"}}; cpu_median_s is the process's CPU
  time (all threads) per call, which other processes on the machine do not inflate.
  """
  for fn in fns.values():
    for _ in range(warmup):
      fn()
  times = {name: [] for name in fns}
  cpu = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start, start_cpu = time.perf_counter(), time.process_time()
      fn()
      times[name].append(time.perf_counter() - start)
      cpu[name].append(time.process_time() - start_cpu)
  return {name: {"median_s": statistics.median(t), "min_s": min(t), "cpu_median_s": statistics.median(cpu[name]),
                 "repeats": repeats} for name, t in times.items()}


LOAD_AT_START = os.getloadavg()[0]  # when a benchmark's process imports this, before it does any work


def machine() -> dict:
  """What the numbers were measured on: the 1-minute load average before the benchmark started (other
  jobs) and at its end (which includes the benchmark's own busy threads)."""
  return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
          "loadavg_1m_at_start": round(LOAD_AT_START, 2), "loadavg_1m_at_end": round(os.getloadavg()[0], 2)}


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
  cells = [[str(h) for h in header]] + [[_fmt(c) for c in row] for row in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
  print(f"\n{title}")
  for k, row in enumerate(cells):
    print("  ".join(c.ljust(w) if k == 0 or i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    if k == 0:
      print("  ".join("-" * w for w in widths))


def _fmt(value: object) -> str:
  if isinstance(value, float):
    return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.4g}"
  return str(value)


def emit(result: dict, output: str | None) -> None:
  """One JSON line: printed to stdout, or appended to `output`."""
  line = json.dumps(result, sort_keys=True)
  if output:
    with open(output, "a") as f:
      f.write(line + "\n")
  else:
    print(line)
  sys.stdout.flush()
