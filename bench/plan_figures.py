"""P7: what `python -m qwen_audio_jax.plan` gives on this machine (per-chip memory, FLOPs, step time).

  python -m bench.plan_figures [--quick]

Runs the plan CLI in a fresh process (it simulates the slice's chips as CPU devices when libtpu is
absent) for configs/tiny_synthetic.py on a v5e-4 slice and reports its figures. The 7B rows of the
README "Scaling" table need libtpu's compile-only TPU devices (a CPU compile does not give TPU memory);
with libtpu installed, the full run also plans configs/qwen_audio_7b_sft.py on v5p-64, else it says why
not. `make scaling` (bench/scaling.py) rebuilds the whole table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from bench import common, rows
from qwen_audio_jax.plan import topology

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 1 << 30
TINY = ("configs/tiny_synthetic.py", "v5e-4")
SEVEN_B = ("configs/qwen_audio_7b_sft.py", "v5p-64")


def plan(config: str, topo: str, mfu: float = 0.4, timeout_s: float = 1800) -> dict:
  """One plan CLI run -> its JSON result (+ exit code and wall seconds)."""
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "plan.json")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "qwen_audio_jax.plan", f"--config={config}", f"--topology={topo}",
                           f"--mfu={mfu}", f"--json={out}"], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout_s, env=dict(os.environ, PYTHONPATH=REPO))
    if proc.returncode not in (0, 3) or not os.path.exists(out):
      tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
      raise RuntimeError(f"plan {config} {topo}: exit {proc.returncode}: {tail[0][:300]}")
    with open(out) as f:
      result = json.load(f)
  return {**result, "exit": proc.returncode, "bench_wall_s": round(time.perf_counter() - t0, 1)}


def summary(r: dict) -> dict:
  t, s = r["target"], r["steps"]["train"]
  total = s["memory"].get("total") or 0
  return {"config": r["config"], "topology": t["topology"], "chips": t["chips"], "backend": t["backend"],
          "how": t["how"], "fits": s["fits"], "per_chip_gib": total / GIB, "hbm_gib": t["hbm_bytes"] / GIB,
          "batch": s["batch"], "seq_len": s["seq_len"], "remat": s["remat"], "tflop_per_step": s["model_flops"] / 1e12,
          "step_s_at_mfu": s["step_time_s"], "mfu": r["mfu"], "tokens_per_s_per_chip": s["tokens_per_s_per_chip"],
          "verdict": r["verdict"], "wall_s": r["bench_wall_s"]}


def _line(p: dict) -> str:
  return (f"{p['config']} on {p['topology']} ({p['chips']} chips, {p['backend']} compile): "
          f"{p['per_chip_gib']:.3f} of {p['hbm_gib']:.0f} GiB per chip, fits {p['fits']}, batch {p['batch']} × "
          f"{p['seq_len']}, remat {p['remat']}, {p['tflop_per_step']:.3g} TFLOP/step, "
          f"{p['step_s_at_mfu']:.3g} s/step at {p['mfu']:.0%} MFU, {p['tokens_per_s_per_chip']:,.0f} tok/s/chip "
          f"(plan took {p['wall_s']:.0f} s)")


def row(quick: bool) -> dict:
  tiny = summary(plan(*TINY))
  notes = [_line(tiny), f"How: {tiny['how']}."]
  details = {"tiny": tiny}
  if topology.libtpu_available() and not quick:
    big = summary(plan(*SEVEN_B))
    details["7b"] = big
    notes.append(_line(big))
  else:
    why = "--quick" if topology.libtpu_available() else "libtpu is not installed (pip install -e .[tpu])"
    notes.append(f"7B plan ({SEVEN_B[0]} on {SEVEN_B[1]}) not run: {why}; a CPU-simulated compile would give XLA "
                 "CPU memory, not TPU HBM. bench/scaling/TABLE.md (README \"Scaling\") holds libtpu figures for "
                 "the 7B configs; after a config change rerun `make scaling` where libtpu is installed.")
  return {"ours": f"tiny_synthetic on {tiny['topology']}: {tiny['per_chip_gib'] * 1024:.0f} MiB per chip, "
                  f"{tiny['step_s_at_mfu'] * 1e3:.2f} ms/step at {tiny['mfu']:.0%} MFU",
          "reference": f"HBM {tiny['hbm_gib']:.0f} GiB per chip ({tiny['backend']} compile)",
          "value": tiny["per_chip_gib"] / tiny["hbm_gib"], "unit": "fraction", "met": None,
          "details": details, "notes": notes}


rows.register(rows.Row("P7", "plan figures (per-chip memory of HBM, FLOPs, step time)", "report", row,
                       backends=("any",)))


def main(argv=None) -> None:
  args = common.parser(__doc__.splitlines()[0]).parse_args(argv)
  result = row(args.quick)
  print("\n".join(result["notes"]))
  common.emit({"benchmark": "plan_figures", **result["details"]}, args.output)


if __name__ == "__main__":
  main()
