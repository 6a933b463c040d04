"""kill -9 at random (seeded) moments of a real training run, SIGTERM and Ctrl-C: every restart resumes from
the latest complete checkpoint, nothing half-written is ever taken for one, no complete checkpoint is lost,
and the final state and the best checkpoint equal an uninterrupted run's bit for bit.

Moments: a random delay after a step line; while Orbax's temporary directory of an (async) latest-N save
exists; while one of a best-K save exists; while the previous best step is being replaced (the new best's
temporary directory or the old one still on disk). A watcher thread polls the workdir every ~0.5 ms and
kills the moment it sees the condition; each trial records what was on disk at the kill.

Default suite: `pytest tests/test_kill_trials.py` runs 2 kill trials (Ctrl-C: test_user_paths; SIGTERM:
test_checkpoint_resume).
All 10 trials + SIGTERM + Ctrl-C: `pytest -m slow -s tests/test_kill_trials.py` (KILL_TRIALS=N to change the count).
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL = 6
SEED = 20261201
KINDS = ("after_step", "latest_tmp", "best_tmp", "best_replace")
STEP_DIR = re.compile(r"^\d+$")

CONFIG = """
import runpy
def get_config(arg=None):
  c = runpy.run_path({tiny!r})["get_config"]({total!r})
  c.train.batch_size = 2
  c.log.peak_tflops = 1.0
  c.train.compilation_cache_dir = {cache!r}
  c.data.seq_buckets = (128,)
  c.checkpoint.every_steps = 1
  c.checkpoint.keep = 2
  c.checkpoint.best_keep = 1
  c.checkpoint.async_save = True
  c.eval.every_steps = 2
  c.eval.batches = 1
  c.eval.batch_size = 2
  c.log.every_steps = 1
  c.log.plot = False
  c.log.tensorboard = False
  return c
"""


def _env():
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_backend_optimization_level=0",
              PYTHONUNBUFFERED="1")


def _steps(folder):
  """Complete step folders (Orbax names unfinished ones `<step>.orbax-checkpoint-tmp-*`)."""
  if not os.path.isdir(folder):
    return set()
  return {int(n) for n in os.listdir(folder) if STEP_DIR.match(n)}


def _tmp(folder):
  return sorted(n for n in os.listdir(folder) if "tmp" in n) if os.path.isdir(folder) else []


def _run(config, workdir, trigger=None, sig=signal.SIGKILL, timeout=600):
  """Runs the train CLI; `trigger(lines)` -> True kills it (checked per stdout line and every ~0.5 ms)."""
  cmd = [sys.executable, "-m", "qwen_audio_jax.train", f"--config={config}", f"--workdir={workdir}"]
  proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  lines, err, fired = [], [], {}

  def fire():
    if "at" not in fired:
      fired["at"] = time.time()
      fired["disk"] = {"checkpoints": sorted(_steps(os.path.join(workdir, "checkpoints"))),
                       "best": sorted(_steps(os.path.join(workdir, "best"))),
                       "tmp": _tmp(os.path.join(workdir, "checkpoints")) + _tmp(os.path.join(workdir, "best"))}
      proc.send_signal(sig)

  def watch():
    while proc.poll() is None and "at" not in fired:
      if trigger(lines):
        fire()
        return
      time.sleep(0.0005)

  threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True).start()
  if trigger is not None:
    threading.Thread(target=watch, daemon=True).start()
  for line in proc.stdout:
    lines.append(line)
  proc.wait(timeout=timeout)
  time.sleep(0.05)
  return {"rc": proc.returncode, "out": "".join(lines), "err": "".join(err), "fired": fired,
          "exited_at": time.time()}


def _state(workdir, step):
  import orbax.checkpoint as ocp
  with ocp.StandardCheckpointer() as ckptr:
    return ckptr.restore(os.path.join(workdir, "checkpoints", str(step), "state"))


def _best(workdir):
  import orbax.checkpoint as ocp
  (step,) = _steps(os.path.join(workdir, "best"))
  with ocp.StandardCheckpointer() as ckptr:
    return step, ckptr.restore(os.path.join(workdir, "best", str(step), "params"))


def _assert_equal_trees(a, b):
  import jax
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(la) == len(lb) > 10
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _trigger(kind, rng, workdir):
  """The kill condition of one trial: (description, predicate over the stdout lines so far)."""
  latest, best = os.path.join(workdir, "checkpoints"), os.path.join(workdir, "best")
  if kind == "after_step":
    step, delay = rng.randint(1, TOTAL - 1), rng.uniform(0.0, 0.5)
    seen = {}

    def after(lines):
      if "t" not in seen and any(l.startswith(f"step {step}/") for l in lines):
        seen["t"] = time.time()
      return "t" in seen and time.time() - seen["t"] >= delay
    return f"{delay:.3f}s after step {step}", after
  if kind == "latest_tmp":
    step = rng.randint(2, TOTAL - 1)
    return f"latest save of step {step} in its temporary directory", lambda _: any(
        n.startswith(f"{step}.") for n in _tmp(latest))
  if kind == "best_tmp":
    return "first best save in its temporary directory", lambda _: bool(_tmp(best))
  step = rng.choice([s for s in range(4, TOTAL + 1, 2)])
  return (f"best step replaced at step {step} (new one in a temporary directory or old one still there)",
          lambda _: any(n.startswith(f"{step}.") for n in _tmp(best)) or (
              step in _steps(best) and len(_steps(best)) > 1))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("kill")
  config = tmp / "kill_config.py"
  config.write_text(CONFIG.format(tiny=os.path.join(ROOT, "configs", "tiny_synthetic.py"), total=str(TOTAL),
                                  cache=str(tmp / "xla_cache")))
  reference = str(tmp / "reference")
  t0 = time.time()
  run = _run(config, reference)
  assert run["rc"] == 0, run["err"][-3000:]
  return {"tmp": tmp, "config": str(config), "reference": reference, "seconds": time.time() - t0,
          "final": _state(reference, TOTAL), "best": _best(reference)}


def _trial(setup, index):
  """One seeded kill -9 and the restart: checks what was on disk against what the restart took."""
  rng = random.Random(SEED + index)
  kind = KINDS[index % len(KINDS)]
  workdir = str(setup["tmp"] / f"trial{index}")
  what, trigger = _trigger(kind, rng, workdir)
  killed = _run(setup["config"], workdir, trigger)
  record = {"trial": index, "kind": kind, "moment": what, "fired": bool(killed["fired"])}
  if killed["fired"]:
    assert killed["rc"] == -signal.SIGKILL, killed["err"][-3000:]
    record["disk_at_kill"] = killed["fired"]["disk"]
  else:  # the run ended before the moment came (e.g. an async save faster than the poll): still resumable
    assert killed["rc"] == 0, killed["err"][-3000:]
  complete = _steps(os.path.join(workdir, "checkpoints"))
  before = set(killed["fired"].get("disk", {}).get("checkpoints", []))
  assert max(before, default=0) <= max(complete, default=0)  # no complete checkpoint vanished
  t0 = time.time()
  resumed = _run(setup["config"], workdir)
  assert resumed["rc"] == 0, resumed["err"][-3000:]
  assert "cannot be read back" not in resumed["err"] and not os.path.exists(os.path.join(workdir, "damaged"))
  if complete:
    got = int(resumed["out"].split("resumed from step ")[1].split()[0])
    assert got == max(complete), (got, sorted(complete))  # the latest complete one, never a half-written one
    record["resumed_from"] = got
  record["restart_s"] = round(time.time() - t0, 1)
  _assert_equal_trees(_state(workdir, TOTAL), setup["final"])
  best_step, best_params = _best(workdir)
  assert best_step == setup["best"][0]
  _assert_equal_trees(best_params, setup["best"][1])
  with open(os.path.join(workdir, "metrics.jsonl")) as f:  # every step logged (replays are identical)
    losses = {}
    for rec in map(json.loads, f):
      if "loss" in rec:
        assert losses.setdefault(rec["step"], rec["loss"]) == rec["loss"]
  with open(os.path.join(setup["reference"], "metrics.jsonl")) as f:
    ref = {r["step"]: r["loss"] for r in map(json.loads, f) if "loss" in r}
  assert losses == ref
  print("TRIAL", json.dumps(record))
  return record


@pytest.mark.parametrize("index", [1, 3])  # in an async latest save; while the best step is replaced
def test_kill9_trial(setup, index):
  _trial(setup, index)


@pytest.mark.slow
def test_kill9_ten_trials(setup):
  n = int(os.environ.get("KILL_TRIALS", "10"))
  records = [_trial(setup, i) for i in range(n)]
  fired = sum(r["fired"] for r in records)
  print("SUMMARY", json.dumps({"trials": n, "fired": fired, "reference_s": round(setup["seconds"], 1)}))
  assert fired >= n // 2


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGTERM, marks=pytest.mark.slow, id="SIGTERM"),
                                 pytest.param(signal.SIGINT, marks=pytest.mark.slow, id="SIGINT")])
def test_stop_signal_checkpoints_exits_zero_and_resumes_exactly(setup, sig):
  workdir = str(setup["tmp"] / f"signal{int(sig)}")
  stopped = _run(setup["config"], workdir, lambda lines: any(l.startswith("step 2/") for l in lines), sig=sig)
  assert stopped["rc"] == 0, stopped["err"][-3000:]
  assert "stopped cleanly at step" in stopped["out"]
  at = int(stopped["out"].split("stopping at step ")[1].split()[0])
  assert at < TOTAL and at in _steps(os.path.join(workdir, "checkpoints"))
  surfaced = stopped["exited_at"] - stopped["fired"]["at"]
  print("SIGNAL", signal.Signals(sig).name, json.dumps({"stopped_at": at, "exit_after_signal_s": round(surfaced, 2)}))
  resumed = _run(setup["config"], workdir)
  assert resumed["rc"] == 0, resumed["err"][-3000:]
  assert f"resumed from step {at}" in resumed["out"]
  _assert_equal_trees(_state(workdir, TOTAL), setup["final"])
