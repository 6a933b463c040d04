"""The benchmark rows: a registry that `bench/run.py` runs in order.

A row is a same-run comparison against what a user would otherwise pick (or, for MFU, against the
machine's peak). Its function takes `quick` and returns a dict with at least:
  ours, reference: short strings (what was timed, and the figure)
  value: the ratio (reference / ours for speed, limit / ours for memory, MFU as a fraction)
  goal: the goal as text; met: bool or None (None: no goal)
  details: any JSON-able figures; notes: list of sentences for RESULTS.md
Rows declare the backends they run on ("cpu", "gpu", "tpu" or "any" for host-only work); `select`
skips the others with a reason. A module registers its rows with `register(Row(...))` and is listed
in `ROW_MODULES`.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable

ROW_MODULES = ("bench.mel_frontend", "bench.encoder_forward", "bench.generation", "bench.train_mfu",
               "bench.data_throughput", "bench.conversion_memory", "bench.plan_figures", "bench.gpu_rows")


@dataclasses.dataclass(frozen=True)
class Row:
  id: str  # "P1", ..., "G1"
  title: str
  goal: str
  run: Callable[[bool], dict]
  backends: tuple[str, ...] = ("cpu",)


ROWS: dict[str, Row] = {}


def register(row: Row) -> Row:
  if row.id in ROWS and ROWS[row.id].run is not row.run:
    raise ValueError(f"bench row {row.id} registered twice")
  ROWS[row.id] = row
  return row


def load() -> dict[str, Row]:
  """Imports every row module (each registers its rows) and returns the rows sorted by id."""
  for name in ROW_MODULES:
    importlib.import_module(name)
  return dict(sorted(ROWS.items(), key=lambda kv: (kv[0][0] != "P", kv[0])))


def select(rows: dict[str, Row], backend: str, only: tuple[str, ...] = ()) -> tuple[list[Row], dict[str, str]]:
  """(rows to run on `backend`, {row id: why skipped}); `only` restricts to these ids."""
  unknown = [r for r in only if r not in rows]
  if unknown:
    raise KeyError(f"--rows: unknown row(s) {unknown}; known: {', '.join(rows)}")
  run, skipped = [], {}
  for rid, row in rows.items():
    if only and rid not in only:
      continue
    if "any" in row.backends or backend in row.backends:
      run.append(row)
    else:
      skipped[rid] = f"needs a {' or '.join(b.upper() for b in row.backends)} backend (this run: {backend})"
  return run, skipped
