"""Runs every benchmark (each in its own python process), then prints a summary of the ratios.

  python -m bench.run_all [--quick] [--output FILE] [--wait_for_load 1.5]

Each benchmark prints its own table; the JSON lines of all of them go to stdout (or are appended to
--output). With --wait_for_load X, each benchmark starts only once the 1-minute load average is below
X (waiting at most --max_wait_s), so other jobs on a shared machine do not pollute the figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from bench import common

BENCHES = ("mel_frontend", "encoder_forward", "conversion_memory", "step_memory")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_for_load(limit: float | None, max_wait_s: float) -> None:
  if limit is None:
    return
  start = time.monotonic()
  if os.getloadavg()[0] >= limit:
    print(f"(1-minute load {os.getloadavg()[0]:.2f} >= {limit}; waiting up to {max_wait_s:.0f} s)", flush=True)
  while os.getloadavg()[0] >= limit and time.monotonic() - start < max_wait_s:
    time.sleep(5)


def run_bench(name: str, quick: bool) -> dict:
  with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as out:
    cmd = [sys.executable, "-m", f"bench.{name}", f"--output={out.name}"] + (["--quick"] if quick else [])
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True)
    print(f"[{name}: {time.perf_counter() - start:.0f} s]", flush=True)
    return json.loads(out.read().splitlines()[-1])


def summary_rows(results: dict) -> list[list[object]]:
  rows = []
  for case, c in results["mel_frontend"]["cases"].items():
    rows.append([f"log-mel, {case}", "HF torch / ours", f"{c['ratio_torch_over_ours']:.2f}x (time)"])
    rows.append([f"log-mel, {case}", "HF numpy / ours", f"{c['ratio_numpy_over_ours']:.2f}x (time)"])
  for r in results["encoder_forward"]["results"]:
    for attn in ("eager", "sdpa"):
      rows.append([f"encoder {r['preset']}, B={r['batch']}", f"HF {attn} / ours",
                   f"{r[f'ratio_{attn}_over_ours']:.2f}x (time)"])
  c = results["conversion_memory"]
  rows.append(["convert.py hf-whisper", "(peak RSS - baseline) / ckpt",
               f"{c['ratio_to_checkpoint']:.2f}x (memory)"])
  rows.append(["convert.py hf-whisper", "(peak anon RSS - baseline) / ckpt",
               f"{c['anon_ratio_to_checkpoint']:.2f}x (memory)"])
  for r in results["step_memory"]["results"]:
    rows.append([f"train step {r['case']}, {r['batch']} x {r['seq']}", "compiled peak (XLA temporaries)",
                 f"{r['peak_gb']:.1f} GB ({r['temp_gb']:.1f} GB)"])
  return rows


def main(argv=None) -> dict:
  p = common.parser(__doc__.splitlines()[0])
  p.add_argument("--wait_for_load", type=float, default=None, help="start each benchmark below this 1-min load")
  p.add_argument("--max_wait_s", type=float, default=600.0, help="longest wait for the load to drop")
  args = p.parse_args(argv)
  results = {}
  for name in BENCHES:
    wait_for_load(args.wait_for_load, args.max_wait_s)
    results[name] = run_bench(name, args.quick)
  common.print_table(f"summary (ratios > 1: the reference needs more; {os.cpu_count()} CPU cores)",
                     ["benchmark", "ratio", "value"], summary_rows(results))
  for name in BENCHES:
    common.emit(results[name], args.output)
  return results


if __name__ == "__main__":
  main()
