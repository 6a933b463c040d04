"""Training charts with matplotlib (Agg backend, no display): loss and eval-loss curves to a PNG."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _pyplot():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg", force=True)
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def _finite(steps: Sequence[int], values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
  s, v = np.asarray(steps, np.float64), np.asarray(values, np.float64)
  keep = np.isfinite(v)
  return s[keep], v[keep]


def loss_curve(path: str, steps: Sequence[int], losses: Sequence[float],
               eval_steps: Sequence[int] = (), eval_losses: Sequence[float] = (),
               size: tuple[float, float] = (8.0, 5.0), dpi: int = 100, title: str = "training loss") -> None:
  """Writes a PNG: train loss (line) and eval loss (line with markers) against the step.

  Non-finite values are left out (a NaN step shows as a gap in the data, not a crash).
  """
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=size, dpi=dpi)
  try:
    s, v = _finite(steps, losses)
    if s.size:
      ax.plot(s, v, color="tab:blue", linewidth=1.2, label="train loss", marker="o" if s.size == 1 else None)
    es, ev = _finite(eval_steps, eval_losses)
    if es.size:
      ax.plot(es, ev, color="tab:red", linewidth=1.5, marker="o", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / answer token)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if s.size or es.size:
      ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, format="png")
  finally:
    plt.close(fig)
