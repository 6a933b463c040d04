"""The main job (`make run`) shortened to a few dozen steps: the loss falls, answers are generated and
scored during training and on the test split, every artefact is written, the table is what the sweep
computed and the exit status says whether every metric was. The full run (2,000 steps; time and table
in the README Quickstart) is `make run` / `python -m qwen_audio_jax.main`, outside the suite."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, TEST_SIZE, SWEEP_LIMIT = 24, 2, 2
TASKS = ("asr", "srwt", "asc", "aqa", "mna", "aac")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("main") / "run")
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run([sys.executable, "-m", "qwen_audio_jax.main", f"--steps={STEPS}", f"--workdir={workdir}",
                         f"--test_size={TEST_SIZE}", f"--sweep_limit={SWEEP_LIMIT}"],
                        capture_output=True, text=True, cwd=ROOT, env=env, timeout=1500, check=False)
  return workdir, proc


def test_loss_falls_and_answers_are_generated_while_training(job):
  workdir, proc = job
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  losses = [r["loss"] for r in rows if "loss" in r]
  assert len(losses) == STEPS and np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.5  # ~8.3 → ~7.0 nats
  [ev] = [r for r in rows if "eval_loss" in r]
  assert ev["step"] == STEPS and 0.0 <= ev["generate/mean_score"] <= 1.0
  assert {f"generate/synthetic_{t}" for t in TASKS} <= {k.rsplit("/", 1)[0] for k in ev}
  for task in TASKS:
    with open(os.path.join(workdir, "generate", str(STEPS), f"synthetic_{task}.jsonl")) as f:
      dump = [json.loads(line) for line in f]
    assert [d["id"] for d in dump] == [f"{task}-validation-{i}" for i in range(SWEEP_LIMIT)]
    assert all(isinstance(d["hypothesis"], str) and d["ids"] and "metrics" in d for d in dump)
  assert os.listdir(os.path.join(workdir, "best")) == [str(STEPS)]


def test_every_artefact_is_written_and_the_table_is_the_sweeps(job):
  workdir, proc = job
  sweep = os.path.join(workdir, "eval_test")
  for path in ("loss.png", "config.json", "eval_test/results.png", "eval_test/results.md", "eval_test/manifest.json"):
    assert os.path.getsize(os.path.join(workdir, path)) > 0, path
  assert any(n.startswith("events.out.tfevents") for n in os.listdir(os.path.join(workdir, "tensorboard")))
  with open(os.path.join(sweep, "results.json")) as f:
    cells = {c["task"]: c for c in json.load(f)["cells"]}
  with open(os.path.join(sweep, "manifest.json")) as f:
    [ckpt] = json.load(f)["checkpoints"]
  assert ckpt["path"] == f"{workdir}@best"
  assert f"model checkpoint {workdir}@best = {workdir}/best/{STEPS} " in proc.stdout
  assert sorted(cells) == sorted(TASKS)
  table = proc.stdout[proc.stdout.index("4. Results"):]
  for task, c in cells.items():
    with open(os.path.join(sweep, c["dump"])) as f:
      assert [json.loads(line)["id"] for line in f] == [f"{task}-test-{i}" for i in range(TEST_SIZE)]
    value = c["summary"][c["summary"]["headline"]]
    [line] = [ln for ln in table.splitlines() if ln.startswith(f"{task} ")]
    assert line.split()[1] == c["recipe"]
    assert (f"{value:.4g}" if value is not None else "NOT COMPUTED") in line, (line, value)
  for name in ("loss curve", "results chart", "per-sample dumps"):
    assert name in table
  computed = all(c["summary"][c["summary"]["headline"]] is not None for c in cells.values())
  assert proc.returncode == (0 if computed else 1), proc.stderr[-2000:]
  assert ("error: no value for" in proc.stderr) == (not computed)
