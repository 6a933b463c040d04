"""The built-in main job (`make run`): the whole product on a small model, on a CPU, nothing downloaded.

    python -m qwen_audio_jax.main [--steps=N] [--workdir=workdir/quickstart-<time>] [--test_size=N]

1. Front end → audio tokens → prompt for the shipped real clip `jfk.flac` (what the LLM would see).
2. Trains `configs/tiny_synthetic.py` (a small Qwen-Audio-architecture model, sharded train step,
   checkpoints) on the built-in synthetic six-task set; every evaluation also generates answers for
   validation clips and scores them with the metric recipes, which choose the `best/` checkpoint.
3. Runs the evaluation sweep `configs/eval/tiny_synthetic.py` on the test split with the run's best
   checkpoint (the run directory is a model checkpoint: `WORKDIR@best`): generation, recipes, per-sample
   dumps, chart.
4. Prints the results table (task, recipe, our value, chance level) and where everything is.
Exit status 0 only if every metric of the table was computed.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
TRAIN_CONFIG = REPO / "configs" / "tiny_synthetic.py"
EVAL_CONFIG = REPO / "configs" / "eval" / "tiny_synthetic.py"
CHECKPOINT_NAME = "tiny"


def _banner(text: str) -> None:
  print(f"\n== {text} ==", flush=True)


def results_rows(results: dict) -> list[dict]:
  """One row per sweep cell: task, recipe, metric, our value, the synthetic set's chance level."""
  from qwen_audio_jax.data import synthetic  # pylint: disable=import-outside-toplevel
  rows = []
  for cell in results["cells"]:
    summary = cell["summary"]
    key = summary.get("headline")
    value = summary.get(key)
    metric, chance, higher = synthetic.CHANCE.get(cell["task"], (key, None, True))
    rows.append({"task": cell["task"], "recipe": cell["recipe"], "metric": key,
                 "value": float(value) if isinstance(value, (int, float)) else None,
                 "chance": chance if metric == key else None, "higher_is_better": higher,
                 "n": summary.get("n"), "dump": cell["dump"]})
  return rows


def format_table(rows: list[dict]) -> str:
  lines = [f"{'task':<6} {'recipe':<26} {'metric':<16} {'ours':>9} {'chance':>9}",
           f"{'-' * 6} {'-' * 26} {'-' * 16} {'-' * 9} {'-' * 9}"]
  for r in rows:
    value = "NOT COMPUTED" if r["value"] is None else f"{r['value']:.4g}"
    chance = "" if r["chance"] is None else f"{r['chance']:.4g}"
    arrow = "↑" if r["higher_is_better"] else "↓"
    lines.append(f"{r['task']:<6} {r['recipe']:<26} {r['metric'] + ' ' + arrow:<16} {value:>9} {chance:>9}")
  return "\n".join(lines)


def _examples(sweep_dir: str, rows: list[dict]) -> None:
  """The first test answer of every task, next to its reference."""
  for r in rows:
    with open(os.path.join(sweep_dir, r["dump"])) as f:
      first = json.loads(f.readline())
    print(f"  {r['task']:<5} reference {first['references'][0]!r}\n        generated {first['hypothesis']!r}")


def _cpu_seconds() -> float:
  """CPU time of this process and its children (java of the captioning metrics), user + system."""
  me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
  return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=None, help="training steps (default: the config's)")
  parser.add_argument("--workdir", default=None, help="run directory (default: a new one under workdir/)")
  parser.add_argument("--test_size", type=int, default=0, help="test samples per task (default: the sweep's)")
  parser.add_argument("--sweep_limit", type=int, default=None, help="validation samples per task decoded at "
                      "every training evaluation (default: the config's)")
  args = parser.parse_args(argv)
  workdir = os.path.abspath(args.workdir or str(REPO / "workdir" / time.strftime("quickstart-%Y%m%d-%H%M%S")))
  t_start = time.time()

  from qwen_audio_jax import demo  # pylint: disable=import-outside-toplevel
  _banner("1. What Qwen-Audio sees for a real clip (front end → audio tokens → prompt)")
  demo.run(demo.JFK_FLAC.as_posix(), task="asr", family="qwen-audio", policy="error", n_mels=80)

  from qwen_audio_jax.eval import sweep, sweep_config  # pylint: disable=import-outside-toplevel
  from qwen_audio_jax.train import loop  # pylint: disable=import-outside-toplevel
  cfg = sweep_config.load(str(TRAIN_CONFIG) + (f":{args.steps}" if args.steps else ""))
  if args.sweep_limit is not None:
    cfg.eval.sweep_limit = args.sweep_limit
  cfg.train.compilation_cache_dir = cfg.train.compilation_cache_dir or os.path.join(workdir, "xla_cache")
  _banner(f"2. Train configs/tiny_synthetic.py for {cfg.train.total_steps} steps in {workdir} "
          f"(every {cfg.eval.every_steps} steps: held-out loss + generated answers scored, best/ by "
          f"{cfg.eval.best_metric})")
  t0 = time.time()
  loop.train(cfg, workdir)
  train_s = time.time() - t0

  _banner("3. Evaluate the best checkpoint on the test split (configs/eval/tiny_synthetic.py)")
  from qwen_audio_jax import checkpoint_io  # pylint: disable=import-outside-toplevel
  model = checkpoint_io.resolve(workdir + "@best")
  model_dir = f"{workdir}@best"
  print(f"model checkpoint {model_dir} = {model.path} (best by {'/'.join(checkpoint_io.best_rule(workdir))})",
        flush=True)
  sweep_cfg = sweep_config.load(str(EVAL_CONFIG))
  sweep_cfg.checkpoints = f"{CHECKPOINT_NAME}={model_dir}"
  if args.test_size:
    sweep_cfg.limit = args.test_size
  sweep_dir = os.path.join(workdir, "eval_test")
  t0 = time.time()
  results = sweep.run(sweep_cfg, sweep_dir)
  eval_s = time.time() - t0

  rows = results_rows(results)
  _banner(f"4. Results on the test split ({rows[0]['n']} clips per task; chance = a listener that ignores "
          "the audio, see qwen_audio_jax/data/synthetic.py)")
  print(format_table(rows))
  print("examples (first test clip of each task):")
  _examples(sweep_dir, rows)
  print(f"\nloss curve        {os.path.join(workdir, 'loss.png')}")
  print(f"results chart     {os.path.join(sweep_dir, 'results.png')}  (table: results.md, all figures: "
        "results.json, recipes and versions: manifest.json)")
  print(f"per-sample dumps  {os.path.join(sweep_dir, CHECKPOINT_NAME)}/*.jsonl  (validation during training: "
        f"{os.path.join(workdir, 'generate')}/<step>/)")
  print(f"tensorboard       tensorboard --logdir {os.path.join(workdir, 'tensorboard')}")
  print(f"try the model     python -m qwen_audio_jax.infer --checkpoint={model_dir} --task=asr --audio=CLIP.wav")
  print(f"time              {time.time() - t_start:.0f} s wall, {_cpu_seconds():.0f} s CPU (training {train_s:.0f} s, "
        f"test evaluation {eval_s:.0f} s)")
  missing = [r["task"] for r in rows if r["value"] is None]
  if missing:
    print(f"error: no value for {', '.join(missing)}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
