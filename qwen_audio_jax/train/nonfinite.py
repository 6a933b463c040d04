"""Non-finite steps: the train step never applies a NaN/Inf update (step.py); this counts and names them.

Policy `train.nonfinite_policy`: "skip" (default) skips such steps and stops the run with `NonFiniteError`
(one line, exit 2) after `train.max_nonfinite_in_a_row` of them in a row (0: never stop); "halt" stops at
the first. Each skipped step is reported on stderr with the ids of the examples of its batch.
"""

from __future__ import annotations

import dataclasses
import sys

import jax


class NonFiniteError(ValueError):
  """Too many steps in a row had a NaN/Inf loss or gradient (train.nonfinite_policy)."""


@dataclasses.dataclass
class Guard:
  """Counts steps whose update was skipped (non-finite loss/gradient), names their examples, and stops the
  run after `limit` in a row (policy "halt": at the first; "skip": limit = train.max_nonfinite_in_a_row,
  0 = never). The count in a row is checked when metrics reach the host (every log.every_steps)."""

  limit: int
  total: int = 0
  in_a_row: int = 0

  @classmethod
  def from_config(cls, train_cfg) -> "Guard":
    policy = str(train_cfg.get("nonfinite_policy", "skip"))
    return cls(1 if policy == "halt" else int(train_cfg.get("max_nonfinite_in_a_row", 0)))

  def observe(self, step: int, rec: dict, example_ids) -> None:
    if not rec.get("nonfinite"):
      self.in_a_row = 0
      return
    self.total += 1
    self.in_a_row += 1
    names = ", ".join(str(i) for i in example_ids if i) if example_ids else "?"
    print(f"warning: step {step}: non-finite loss {rec['loss']} / grad_norm {rec['grad_norm']}: update skipped "
          f"({self.in_a_row} in a row, {self.total} in this run); process {jax.process_index()}'s examples: "
          f"{names}", file=sys.stderr, flush=True)
    if self.limit and self.in_a_row >= self.limit:
      raise NonFiniteError(f"train: {self.in_a_row} step(s) in a row up to step {step} had a non-finite loss "
                           f"or gradient (train.nonfinite_policy / max_nonfinite_in_a_row); last examples: "
                           f"{names}")
