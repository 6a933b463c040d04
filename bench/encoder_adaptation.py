"""MoWE and encoder PETL on the built-in synthetic corpus: the README's "Adapting the audio encoder" tables.

  python -m bench.encoder_adaptation --out=runs/adapt            # everything (~40 min on 2 CPU cores)
  python -m bench.encoder_adaptation --out=runs/adapt --stages=base,frozen,adapter --limit=50

Stages (each a `qwen_audio_jax.train` run, skipped when its workdir already finished):
  base        configs/tiny_synthetic.py:BASE_STEPS from scratch
  mowe        configs/mowe_tiny_synthetic.py:BASE_STEPS from scratch (equal steps with base)
  frozen adapter prompt lora full
              configs/encoder_petl_tiny_synthetic.py:STEPS,MODE from base (LLM frozen, projector trains)
  mowe_paper  configs/mowe_tiny_synthetic.py:STEPS,paper from base (weak encoders, routers, projector train)
  sweep       `qwen_audio_jax.evaluate` with configs/eval/tiny_synthetic.py (test split) on every finished
              run's latest checkpoint; writes OUT/table.md: per-task headline figures, the mean [0, 1] score
              (`eval.during_training.normalised_score`), trained parameters, and MoWE's last router usage.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

PETL_MODES = ("frozen", "adapter", "prompt", "lora", "full")
STAGES = ("base", "mowe", *PETL_MODES, "mowe_paper", "sweep")


def train_args(stage: str, base_steps: int, steps: int, out: str) -> list[str]:
  base = os.path.join(out, "base")
  if stage == "base":
    return [f"--config=configs/tiny_synthetic.py:{base_steps}"]
  if stage == "mowe":
    return [f"--config=configs/mowe_tiny_synthetic.py:{base_steps}"]
  if stage == "mowe_paper":
    return [f"--config=configs/mowe_tiny_synthetic.py:{steps},paper", f"--config.train.init_params_dir={base}"]
  return [f"--config=configs/encoder_petl_tiny_synthetic.py:{steps},{stage}", f"--config.train.init_params_dir={base}"]


def run_stage(stage: str, args) -> None:
  workdir = os.path.join(args.out, stage)
  done = os.path.join(args.out, f"{stage}.log")
  if os.path.exists(done):
    print(f"{stage}: done before ({done})", flush=True)
    return
  cmd = [sys.executable, "-m", "qwen_audio_jax.train", *train_args(stage, args.base_steps, args.steps, args.out),
         f"--workdir={workdir}", "--config.eval.sweep=", "--config.eval.best_metric=eval_loss",
         "--config.eval.best_mode=min"]
  print(" ".join(cmd[1:]), flush=True)
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if proc.returncode:
    sys.exit(f"{stage}: exit {proc.returncode}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
  with open(done + ".tmp", "w") as f:
    f.write(proc.stdout)
  os.replace(done + ".tmp", done)


def trained_params(log: str) -> str:
  """'N' or 'N + LoRA M' from the run's 'trainable params ...' line."""
  m = re.search(r"trainable params ([\d,]*\d)", log)
  lora = re.search(r"LoRA: .*?([\d,]*\d) adapter params", log)
  return (m.group(1) if m else "?") + (f" + LoRA {lora.group(1)}" if lora else "")


def last_usage(log: str) -> str:
  lines = [l for l in log.splitlines() if "mowe_aux" in l]
  return lines[-1].split("mowe_aux", 1)[1].strip() if lines else ""


def sweep(args) -> None:
  from qwen_audio_jax.eval import during_training, report  # pylint: disable=import-outside-toplevel
  runs = [s for s in STAGES[:-1] if os.path.exists(os.path.join(args.out, f"{s}.log"))]
  sweep_dir = os.path.join(args.out, "sweep")
  ckpts = ",".join(f"{s}={os.path.join(args.out, s)}@latest" for s in runs)
  cmd = [sys.executable, "-m", "qwen_audio_jax.evaluate", "--config=configs/eval/tiny_synthetic.py",
         f"--workdir={sweep_dir}", f"--config.checkpoints={ckpts}", f"--config.limit={args.limit}"]
  print(" ".join(cmd[1:]), flush=True)
  subprocess.run(cmd, check=True)
  with open(os.path.join(sweep_dir, "results.json")) as f:
    cells = json.load(f)["cells"]
  datasets = sorted({c["dataset"] for c in cells})
  head = ["run", "trained params"] + [d.replace("synthetic_", "") for d in datasets] + ["mean score", "L_MoWE, usage per encoder"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for s in runs:
    with open(os.path.join(args.out, f"{s}.log")) as f:
      log = f.read()
    figs, scores = [], []
    for d in datasets:
      cell = next(c for c in cells if c["checkpoint"] == s and c["dataset"] == d)
      key, value = report.headline(cell["summary"])
      figs.append(f"{key} {value:.3f}" if value is not None else f"{key} -")
      scores.append(during_training.normalised_score(key, value))
    lines.append(f"| {s} | {trained_params(log)} | " + " | ".join(figs)
                 + f" | {sum(scores) / len(scores):.3f} | {last_usage(log)} |")
  table = "\n".join(lines) + "\n"
  with open(os.path.join(args.out, "table.md"), "w") as f:
    f.write(table)
  print(table)


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--out", required=True)
  ap.add_argument("--stages", default=",".join(STAGES))
  ap.add_argument("--base_steps", type=int, default=600)
  ap.add_argument("--steps", type=int, default=150)
  ap.add_argument("--limit", type=int, default=100, help="test clips per task in the sweep")
  args = ap.parse_args(argv)
  stages = args.stages.split(",")
  bad = [s for s in stages if s not in STAGES]
  if bad:
    print(f"--stages: unknown {bad}; choose from {','.join(STAGES)}", file=sys.stderr)
    sys.exit(2)
  os.makedirs(args.out, exist_ok=True)
  for s in stages:
    sweep(args) if s == "sweep" else run_stage(s, args)


if __name__ == "__main__":
  main()
