"""The README "Scaling" table: one `python -m qwen_audio_jax.plan` command per row, results as JSON.

  python -m bench.scaling [--out bench/scaling] [--rows ID,...] [--render_only] [--mfu 0.4]

Runs each row's plan in its own process (one after the other: libtpu compiles are CPU-heavy) and
writes OUT/<row>.json, then prints the Markdown table built from every JSON in OUT, with each row's
command beside it. Re-run after model or config changes (per-tower dtypes, chunked loss, ...) and paste
the table into README.md. Rows that do not fit show the suggestion the plan found.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from qwen_audio_jax.plan import analyse

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"stage1": "configs/qwen_audio_7b_pretrain.py", "sft": "configs/qwen_audio_7b_sft.py",
           "lora": "configs/qwen_audio_7b_lora.py"}
TOPOLOGIES = ("v4-32", "v5p-64", "v6e-64")
ROWS = {f"{c}_{t}": (CONFIGS[c], t) for c in CONFIGS for t in TOPOLOGIES}
GIB = 1 << 30


def command(row: str, out: str, mfu: float) -> list[str]:
  config, topo = ROWS[row]
  return ["python", "-m", "qwen_audio_jax.plan", f"--config={config}", f"--topology={topo}", f"--mfu={mfu}",
          f"--json={os.path.join(out, row + '.json')}"]


def render(out: str) -> str:
  head = ("| run | topology (chips) | backend | batch × seq | remat, accum | per-chip GiB (of HBM) | fits | "
          "TFLOP/step | step s @MFU | tok/s/chip | command |\n|---|---|---|---|---|---|---|---|---|---|---|")
  lines = [head]
  for row in ROWS:
    path = os.path.join(out, row + ".json")
    if not os.path.exists(path):
      continue
    with open(path) as f:
      r = json.load(f)
    t, s = r["target"], r["steps"]["train"]
    total = s["memory"].get("total")
    if total:
      mem = f"{total / GIB:.1f} ({t['hbm_bytes'] / GIB:.0f})"
    else:
      need = s["memory"].get("oom_needed") or analyse.oom_usage(s.get("error", "")).get("oom_needed")
      mem = f"OOM: needs {need / GIB:.0f} ({t['hbm_bytes'] / GIB:.0f})" if need else f"OOM ({t['hbm_bytes'] / GIB:.0f})"
    fits = "yes" if s["fits"] else "**no**"
    best = (r.get("search") or {}).get("best")
    if not s["fits"] and best:
      fits += (f"; fits with remat={best['remat']}, accum={best['grad_accum_steps']} "
               f"({best['memory']['total'] / GIB:.1f} GiB)")
    cmd = " ".join(command(row, "OUT", r["mfu"])[:-1])
    lines.append(f"| {row.split('_')[0]} | {t['topology']} ({t['chips']}) | {t['backend']} | "
                 f"{s['batch']} × {s['seq_len']} | {s['remat']}, {s['grad_accum_steps']} | {mem} | {fits} | "
                 f"{s['model_flops'] / 1e12:,.0f} | {s['step_time_s']:.2f} @{r['mfu']:.0%} | "
                 f"{s['tokens_per_s_per_chip']:,.0f} | `{cmd}` |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.split("\n\n")[0])
  p.add_argument("--out", default=os.path.join(REPO, "bench", "scaling"))
  p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from {', '.join(ROWS)}")
  p.add_argument("--mfu", type=float, default=0.4)
  p.add_argument("--render_only", action="store_true")
  args = p.parse_args(argv)
  rows = [r for r in args.rows.split(",") if r]
  unknown = [r for r in rows if r not in ROWS]
  if unknown:
    p.error(f"--rows: unknown {unknown}; known: {', '.join(ROWS)}")
  if not args.render_only:
    for row in rows:
      cmd = command(row, args.out, args.mfu)
      print("+ " + " ".join(cmd), flush=True)
      t0 = time.time()
      code = subprocess.call([sys.executable] + cmd[1:], cwd=REPO)
      print(f"[{row}: exit {code}, {time.time() - t0:.0f} s]", flush=True)
  print(render(args.out))
  return 0


if __name__ == "__main__":
  sys.exit(main())
