"""The built-in main job (`make run`): inspect a real clip, then train and evaluate the tiny model.

    python -m qwen_audio_jax.main [--steps=150] [--workdir=workdir/quickstart-<time>]

1. Runs the front end, tokenizer and prompt builder on the shipped `jfk.flac` (what the LLM would see).
2. Trains `configs/tiny_synthetic.py` (a small Qwen-Audio-architecture model) on the built-in synthetic
   multi-task audio set for a few CPU minutes, evaluating on held-out examples as it goes.
3. Prints the training and held-out loss at the start and the end, and where the logs, curve and
   checkpoints are.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
TINY_CONFIG = REPO / "configs" / "tiny_synthetic.py"


def load_config(spec: str):
  """Loads `configs/NAME.py[:arg]` the way the train CLI's `--config=` does."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("run_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def _summary(workdir: str) -> dict:
  """First/last training loss and held-out losses from the run's metrics.jsonl."""
  train, evals = [], []
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      row = json.loads(line)
      if "loss" in row:
        train.append((row["step"], row["loss"]))
      if "eval_loss" in row:
        evals.append((row["step"], row["eval_loss"]))
  return {"train": train, "eval": evals}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=None, help="training steps (default: the config's)")
  parser.add_argument("--workdir", default=None, help="run directory (default: a new one under workdir/)")
  args = parser.parse_args(argv)

  from qwen_audio_jax import demo  # pylint: disable=import-outside-toplevel
  print("== 1. What Qwen-Audio sees for a real clip (front end → audio tokens → prompt) ==", flush=True)
  demo.run(demo.JFK_FLAC.as_posix(), task="asr", family="qwen-audio", policy="error", n_mels=80)

  cfg = load_config(str(TINY_CONFIG) + (f":{args.steps}" if args.steps else ""))
  workdir = args.workdir or str(REPO / "workdir" / time.strftime("quickstart-%Y%m%d-%H%M%S"))
  print(f"\n== 2. Train + evaluate configs/tiny_synthetic.py ({cfg.train.total_steps} steps) in {workdir} ==",
        flush=True)
  from qwen_audio_jax.train import loop  # pylint: disable=import-outside-toplevel
  loop.train(cfg, workdir)

  s = _summary(workdir)
  (s0, l0), (s1, l1) = s["train"][0], s["train"][-1]
  print("\n== 3. Result ==")
  print(f"training loss  step {s0}: {l0:.3f}  →  step {s1}: {l1:.3f}")
  for step, loss in s["eval"]:
    print(f"held-out loss  step {step}: {loss:.3f}")
  print(f"loss curve     {os.path.join(workdir, 'loss.png')}")
  print(f"tensorboard    tensorboard --logdir {os.path.join(workdir, 'tensorboard')}")
  print(f"checkpoints    {os.path.join(workdir, 'checkpoints')} (resume: python -m qwen_audio_jax.train "
        f"--config={TINY_CONFIG.relative_to(REPO)} --workdir={workdir})")
  if not l1 < l0:
    print("error: the training loss did not fall", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
