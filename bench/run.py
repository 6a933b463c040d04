"""Runs the benchmark rows (bench/rows.py) and writes bench/RESULTS.md.

  python -m bench.run [--quick] [--json OUT] [--rows P1,P2] [--results FILE] [--wait_for_load 1.5]

Every row is a same-run ratio against what a user would otherwise pick (or MFU against a measured or
tabled peak): contenders called in turn, warm-up excluded, median of >= 5 rounds (--quick: fewer,
smaller inputs, about 2 minutes, for a smoke test). torch gets the same number of threads as XLA's
CPU client (all cores this process may use). Rows that need another backend are listed as skipped:
on a machine with a GPU the same command runs the GPU rows (7B widths, device timing) instead of the
CPU-only comparisons. A full run writes RESULTS.md (--results) with the machine description and the
load it ran under (each row records the load before and after it; --wait_for_load X starts a row only
below load X, waiting at most --max_wait_s); --quick writes it only when --results is given.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_RESULTS = os.path.join(REPO, "bench", "RESULTS.md")
BUSY_LOAD = 0.5  # 1-minute load average above which other processes are said to be running


def threads() -> int:
  """CPU threads XLA's CPU client uses (every core this process may run on); torch gets the same."""
  return len(os.sched_getaffinity(0))


def _first(path: str, key: str) -> str:
  try:
    with open(path) as f:
      return next((line.split(":", 1)[1].strip() for line in f if line.startswith(key)), "?")
  except OSError:
    return "?"


def busy_processes(limit: int = 6) -> list[str]:
  """The busiest other processes right now (ps), as 'command (%cpu)'."""
  try:
    out = subprocess.run(["ps", "-eo", "pid,pcpu,comm", "--sort=-pcpu"], capture_output=True, text=True,
                         timeout=10).stdout.splitlines()[1:]
  except (OSError, subprocess.SubprocessError):
    return []
  rows = []
  for line in out:
    pid, cpu, comm = line.split(None, 2)
    if int(pid) != os.getpid() and float(cpu) >= 5.0:
      rows.append(f"{comm} ({float(cpu):.0f}%)")
  return rows[:limit]


def machine(backend: str, devices: list[str]) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  versions = {"jax": jax.__version__}
  for mod in ("jaxlib", "torch", "transformers", "flax"):
    try:
      versions[mod] = __import__(mod).__version__
    except ImportError:
      pass
  return {"cpu": _first("/proc/cpuinfo", "model name"), "cpu_count": os.cpu_count(), "threads": threads(),
          "memory_gb": round(int(_first("/proc/meminfo", "MemTotal").split()[0]) / 2**20, 1)
          if _first("/proc/meminfo", "MemTotal") != "?" else None,
          "platform": platform.platform(), "python": platform.python_version(), "backend": backend,
          "devices": devices, "versions": versions, "loadavg_1m_start": round(os.getloadavg()[0], 2),
          "busy_at_start": busy_processes()}


def wait_for_load(limit: float | None, max_wait_s: float) -> None:
  """Waits (at most max_wait_s) until the 1-minute load average is below `limit` (None: no wait)."""
  if limit is None:
    return
  start = time.monotonic()
  if os.getloadavg()[0] >= limit:
    print(f"(1-minute load {os.getloadavg()[0]:.2f} >= {limit}; waiting up to {max_wait_s:.0f} s)", flush=True)
  while os.getloadavg()[0] >= limit and time.monotonic() - start < max_wait_s:
    time.sleep(5)


def run_rows(rows, quick: bool, load_limit: float | None = None, max_wait_s: float = 0.0) -> list[dict]:
  results = []
  for row in rows:
    wait_for_load(load_limit, max_wait_s)
    print(f"\n=== {row.id}: {row.title}", flush=True)
    start, load = time.perf_counter(), os.getloadavg()[0]
    try:
      out = dict(row.run(quick), status="ok")
    except Exception as e:  # pylint: disable=broad-exception-caught  (one failing row must not hide the others)
      traceback.print_exc()
      out = {"status": "error", "reason": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
    out.update(id=row.id, title=row.title, goal=row.goal, seconds=round(time.perf_counter() - start, 1),
               loadavg_1m_before=round(load, 2), loadavg_1m_after=round(os.getloadavg()[0], 2))
    print(f"=== {row.id}: {summary_line(out)} [{out['seconds']:.0f} s]", flush=True)
    results.append(out)
  return results


def _fmt_value(r: dict) -> str:
  v = r.get("value")
  if v is None:
    return "–"
  return f"{100 * v:.1f}%" if r.get("unit") == "fraction" else f"{v:.2f}x"


def summary_line(r: dict) -> str:
  if r["status"] != "ok":
    return f"{r['status']}: {r.get('reason', '')}"
  met = {True: "goal met", False: "goal missed", None: "no goal"}[r.get("met")]
  return f"{_fmt_value(r)} ({met}; goal {r['goal']})"


def markdown(report: dict) -> str:
  m = report["machine"]
  busy = m["loadavg_1m_start"] > BUSY_LOAD or m["busy_at_start"]
  lines = [
      "# Benchmark results", "",
      f"`{report['command']}`, {report['date']}, {report['wall_s'] / 60:.1f} min in all. Generated by bench/run.py; "
      "see bench/README.md for what each row measures.", "",
      "## Machine", "",
      f"- {m['cpu']}, {m['cpu_count']} logical CPUs ({m['threads']} used by XLA and by torch), "
      f"{m['memory_gb']} GB RAM; {m['platform']}, Python {m['python']}",
      f"- JAX backend `{m['backend']}` ({', '.join(m['devices'])}); "
      + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
      f"- 1-minute load average at start {m['loadavg_1m_start']}, at end {report['loadavg_1m_end']}"
      + (f". **Other processes were running** (busiest at start: {', '.join(m['busy_at_start']) or 'see load'}); "
         "ratios are same-run (contenders interleaved), absolute times are inflated." if busy else "."), "",
      "## Rows", "",
      "| row | what | ours | reference | ratio / MFU | goal | met |", "|---|---|---|---|---|---|---|"]
  for r in report["rows"]:
    if r["status"] != "ok":
      lines.append(f"| {r['id']} | {r['title']} | {r['status']}: {r.get('reason', '')} | | | {r['goal']} | |")
      continue
    met = {True: "yes", False: "**no**", None: "–"}[r.get("met")]
    lines.append(f"| {r['id']} | {r['title']} | {r['ours']} | {r['reference']} | {_fmt_value(r)} | {r['goal']} | {met} |")
  for rid, why in report["skipped"].items():
    lines.append(f"| {rid} | skipped | {why} | | | | |")
  lines += ["", "## Notes", ""]
  for r in report["rows"]:
    for note in r.get("notes", []):
      lines.append(f"- **{r['id']}**: {note}")
  lines.append("")
  return "\n".join(lines)


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true", help="every row tiny (about 2 minutes; smoke test)")
  p.add_argument("--json", help="write the full report (every figure) to this JSON file")
  p.add_argument("--rows", default="", help="comma-separated row ids to run (default: all for this backend)")
  p.add_argument("--results", default=None,
                 help=f"markdown summary to write (default: {os.path.relpath(DEFAULT_RESULTS, REPO)} for a full run, "
                      "none with --quick)")
  p.add_argument("--wait_for_load", type=float, default=None,
                 help="start each row only when the 1-minute load average is below this (shared machines)")
  p.add_argument("--max_wait_s", type=float, default=600.0, help="longest wait for the load to drop, per row")
  args = p.parse_args(argv)
  from bench import rows as rows_lib  # pylint: disable=import-outside-toplevel
  only = tuple(r.strip() for r in args.rows.split(",") if r.strip())
  registry = rows_lib.load()
  try:
    selected, skipped = rows_lib.select(registry, _backend(), only)
  except KeyError as e:
    print(f"bench.run: {e.args[0]}", file=sys.stderr)
    sys.exit(2)
  _set_torch_threads()
  import jax  # pylint: disable=import-outside-toplevel
  start = time.perf_counter()
  report = {"command": "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:]),
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "quick": args.quick,
            "machine": machine(_backend(), [d.device_kind for d in jax.devices()]), "skipped": skipped}
  for rid, why in skipped.items():
    print(f"=== {rid}: skipped ({why})")
  report["rows"] = run_rows(selected, args.quick, args.wait_for_load, args.max_wait_s)
  report["wall_s"] = time.perf_counter() - start
  report["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
  print("\nsummary")
  for r in report["rows"]:
    print(f"  {r['id']:3s} {r['title'][:60]:60s} {summary_line(r)}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(report, f, indent=1, sort_keys=True, default=str)
  results = args.results if args.results is not None else (None if args.quick else DEFAULT_RESULTS)
  if results:
    with open(results, "w") as f:
      f.write(markdown(report))
    print(f"wrote {results}")
  return report


def _backend() -> str:
  import jax  # pylint: disable=import-outside-toplevel
  return jax.default_backend()


def _set_torch_threads() -> None:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return
  torch.set_num_threads(threads())


if __name__ == "__main__":
  main()
