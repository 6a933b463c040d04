"""The plan as a text table (stdout) and as JSON."""

from __future__ import annotations

import json
import os

GIB = 1 << 30
_COLS = ("step", "batch", "seq", "remat", "accum", "args GiB", "out GiB", "alias GiB", "temp GiB", "total GiB",
         "HBM %", "fits", "TFLOP/step", "step s", "tok/s/chip", "compile s")


def row(name: str, r: dict, hbm: int) -> list[str]:
  m = r.get("memory", {})
  gib = lambda k: f"{m[k] / GIB:.2f}" if k in m else "-"  # pylint: disable=unnecessary-lambda-assignment
  total = m.get("total")
  return [name, str(r["batch"]), str(r["seq_len"]), str(r.get("remat", "-")), str(r.get("grad_accum_steps", "-")),
          gib("argument"), gib("output"), gib("alias"), gib("temp"), gib("total"),
          f"{100 * total / hbm:.0f}%" if total else "-", "yes" if r["fits"] else "NO",
          f"{r['model_flops'] / 1e12:.1f}", f"{r['step_time_s']:.2f}", f"{r['tokens_per_s_per_chip']:.0f}",
          f"{r['compile_s']:.0f}"]


def table(rows: list[list[str]]) -> str:
  widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(_COLS)]
  def fmt(cells):
    return "  ".join(c.rjust(w) for c, w in zip(cells, widths))
  return "\n".join([fmt(_COLS)] + [fmt(r) for r in rows])


def text(result: dict) -> str:
  t = result["target"]
  mesh = " ".join(f"{k}={v}" for k, v in result["mesh"].items())
  lines = [f"plan: {result['config']} on {t['describe']}",
           f"compile: {t['how']}",
           f"mesh {mesh} | HBM {t['hbm_bytes'] / GIB:.1f} GiB per chip"
           f" | peak {t['peak_flops'] / 1e12:.0f} TFLOP/s per chip | step time at an assumed MFU of "
           f"{result['mfu']:.0%}"]
  rows = [row(n, r, t["hbm_bytes"]) for n, r in result["steps"].items()]
  for tr in result.get("search", {}).get("trials", []):
    rows.append(row("  tried", tr, t["hbm_bytes"]))
  lines.append(table(rows))
  for name, r in result["steps"].items():
    if r.get("error"):
      lines.append(f"{name}: XLA: {r['error']}")
  lines.append(result["verdict"])
  return "\n".join(lines)


def write_json(path: str, result: dict) -> None:
  """Atomically (temp file + rename)."""
  d = os.path.dirname(os.path.abspath(path))
  os.makedirs(d, exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(result, f, indent=1, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)
