"""Exact resume through the real CLI: N steps uninterrupted == (SIGTERM → resume → SIGKILL → resume).

Parameters and per-step losses must be bit-identical. Uses the tiny model on the built-in synthetic
data; the processes share a persistent compilation cache so only the first one compiles.
"""

import json
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL = 5

CONFIG = """
import runpy
def get_config(arg=None):
  c = runpy.run_path({tiny!r})["get_config"]({total!r})
  c.train.batch_size = 2
  c.log.peak_tflops = 1.0
  c.train.compilation_cache_dir = {cache!r}
  c.data.seq_buckets = (128,)
  c.checkpoint.every_steps = 2
  c.eval.every_steps = 0
  c.log.every_steps = 1
  c.log.plot = False
  return c
"""


def _env():
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_backend_optimization_level=0",
              PYTHONUNBUFFERED="1")


def _launch(config, workdir):
  cmd = [sys.executable, "-m", "qwen_audio_jax.train", f"--config={config}", f"--workdir={workdir}"]
  return subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(config, workdir, signal_at=None, sig=None):
  """Runs to completion; with `signal_at`, sends `sig` once stdout shows that step finished."""
  proc = _launch(config, workdir)
  err = []
  threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True).start()
  lines = []
  for line in proc.stdout:
    lines.append(line)
    if signal_at is not None and line.startswith(f"step {signal_at}/"):
      proc.send_signal(sig)
      signal_at = None
  proc.wait(timeout=600)
  return proc.returncode, "".join(lines), "".join(err)


def _losses(workdir):
  out = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      rec = json.loads(line)
      if "loss" in rec:
        out[rec["step"]] = rec["loss"]  # a replayed step overwrites: it must be identical anyway
  return out


def _final_state(workdir):
  import orbax.checkpoint as ocp
  with ocp.StandardCheckpointer() as ckptr:
    return ckptr.restore(os.path.join(workdir, "checkpoints", str(TOTAL), "state"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("resume")
  config = tmp / "resume_config.py"
  config.write_text(CONFIG.format(tiny=os.path.join(ROOT, "configs", "tiny_synthetic.py"), total=str(TOTAL),
                                  cache=str(tmp / "xla_cache")))
  straight, resumed = str(tmp / "straight"), str(tmp / "resumed")
  rc_a, out_a, err_a = _run(config, straight)
  assert rc_a == 0, err_a[-3000:]
  rc_b, out_b, err_b = _run(config, resumed, signal_at=1, sig=signal.SIGTERM)
  rc_c, out_c, err_c = _run(config, resumed, signal_at=3, sig=signal.SIGKILL)
  rc_d, out_d, err_d = _run(config, resumed)
  return dict(straight=straight, resumed=resumed, rc=(rc_a, rc_b, rc_c, rc_d), out=(out_a, out_b, out_c, out_d),
              err=(err_a, err_b, err_c, err_d))


def test_sigterm_saves_and_exits_zero(runs):
  assert runs["rc"][1] == 0, runs["err"][1][-3000:]
  out = runs["out"][1]
  assert "stopping at step" in out and "stopped cleanly" in out
  stopped_at = int(out.split("stopping at step ")[1].split()[0])
  assert 1 <= stopped_at < 3


def test_sigkill_then_resume_from_last_complete_checkpoint(runs):
  assert runs["rc"][2] == -signal.SIGKILL
  assert "resumed from step" in runs["out"][2]
  assert runs["rc"][3] == 0, runs["err"][3][-3000:]
  resumed_from = int(runs["out"][3].split("resumed from step ")[1].split()[0])
  assert resumed_from < TOTAL


def test_resumed_run_is_bit_identical(runs):
  import jax
  a, b = _losses(runs["straight"]), _losses(runs["resumed"])
  assert sorted(a) == list(range(1, TOTAL + 1)) and sorted(b) == sorted(a)
  assert a == b  # exact float equality of every step's loss
  sa, sb = _final_state(runs["straight"]), _final_state(runs["resumed"])
  leaves_a, leaves_b = jax.tree_util.tree_leaves(sa), jax.tree_util.tree_leaves(sb)
  assert len(leaves_a) == len(leaves_b) > 10
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert int(sa["step"]) == TOTAL
