"""Loss-curve PNG without matplotlib: a tiny numpy rasteriser and a zlib PNG encoder.

Draws the train loss (blue) and optional eval loss (red) against the step, with a frame and
min/max labels on both axes in a 3×5 pixel font.
"""

from __future__ import annotations

import struct
import zlib
from typing import Sequence

import numpy as np

_FONT = {  # 3x5 glyphs, rows top to bottom, 3 bits per row
    "0": (7, 5, 5, 5, 7), "1": (2, 6, 2, 2, 7), "2": (7, 1, 7, 4, 7), "3": (7, 1, 7, 1, 7),
    "4": (5, 5, 7, 1, 1), "5": (7, 4, 7, 1, 7), "6": (7, 4, 7, 5, 7), "7": (7, 1, 1, 1, 1),
    "8": (7, 5, 7, 5, 7), "9": (7, 5, 7, 1, 7), ".": (0, 0, 0, 0, 2), "-": (0, 0, 7, 0, 0),
    "e": (0, 7, 7, 4, 7), "+": (0, 2, 7, 2, 0), " ": (0, 0, 0, 0, 0),
}
BLUE, RED, BLACK, GREY = (31, 119, 180), (214, 39, 40), (0, 0, 0), (200, 200, 200)


def png_bytes(rgb: np.ndarray) -> bytes:
  """RGB uint8 [H, W, 3] → PNG file bytes."""
  h, w, _ = rgb.shape
  raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

  def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
          + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _text(img, x: int, y: int, s: str, scale: int = 2) -> None:
  for i, ch in enumerate(s):
    rows = _FONT.get(ch, _FONT[" "])
    for r, bits in enumerate(rows):
      for c in range(3):
        if bits >> (2 - c) & 1:
          y0, x0 = y + r * scale, x + (i * 4 + c) * scale
          img[y0:y0 + scale, x0:x0 + scale] = BLACK


def _line(img, x0, y0, x1, y1, color, width: int = 2) -> None:
  n = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
  xs = np.rint(np.linspace(x0, x1, n)).astype(int)
  ys = np.rint(np.linspace(y0, y1, n)).astype(int)
  h, w, _ = img.shape
  for dx in range(width):
    for dy in range(width):
      img[np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)] = color


def _fmt(v: float) -> str:
  return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.2e}"


def loss_curve(path: str, steps: Sequence[int], losses: Sequence[float],
               eval_steps: Sequence[int] = (), eval_losses: Sequence[float] = (),
               size: tuple[int, int] = (640, 400)) -> None:
  """Writes the PNG; non-finite losses are skipped."""
  w, h = size
  img = np.full((h, w, 3), 255, np.uint8)
  left, right, top, bottom = 70, w - 20, 20, h - 40
  img[top:bottom + 1, [left, right]] = GREY
  img[[top, bottom], left:right + 1] = GREY
  pts = [(s, l) for s, l in zip(steps, losses) if np.isfinite(l)]
  ev = [(s, l) for s, l in zip(eval_steps, eval_losses) if np.isfinite(l)]
  if pts or ev:
    xs = [p[0] for p in pts + ev]
    ys = [p[1] for p in pts + ev]
    x_lo, x_hi = min(xs), max(max(xs), min(xs) + 1)
    y_lo, y_hi = min(ys), max(ys)
    y_hi = y_hi if y_hi > y_lo else y_lo + 1.0

    def to_px(s, l):
      return (left + (s - x_lo) / (x_hi - x_lo) * (right - left),
              bottom - (l - y_lo) / (y_hi - y_lo) * (bottom - top))

    for series, color in ((pts, BLUE), (ev, RED)):
      px = [to_px(s, l) for s, l in series]
      for a, b in zip(px, px[1:]):
        _line(img, *a, *b, color)
      if len(px) == 1 or color == RED:
        for x, y in px:
          _line(img, x - 3, y, x + 3, y, color, 3)
    _text(img, 4, top, _fmt(y_hi))
    _text(img, 4, bottom - 10, _fmt(y_lo))
    _text(img, left, bottom + 8, _fmt(x_lo))
    _text(img, right - 8 * len(_fmt(x_hi)), bottom + 8, _fmt(x_hi))
  with open(path, "wb") as f:
    f.write(png_bytes(img))
