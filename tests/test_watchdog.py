"""The per-host step watchdog: unit behaviour (fake clock-free, fast), and a real training run whose
step hangs: it dumps every thread's stack and exits 124."""

import os
import subprocess
import sys
import threading
import time

import pytest

from qwen_audio_jax.train import watchdog as wd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Fired(Exception):
  pass


@pytest.fixture
def fake_exit(monkeypatch):
  codes = []

  def _exit(code):
    codes.append(code)  # the watchdog thread then ends

  monkeypatch.setattr(wd.os, "_exit", _exit)
  return codes


def _stall_forever_in_a_named_function(event):
  event.wait(30)


def test_fires_after_factor_times_median_and_dumps_all_stacks(fake_exit, tmp_path):
  out = open(tmp_path / "stderr.txt", "w+")  # faulthandler writes to a real file descriptor
  dog = wd.Watchdog(factor=3.0, min_timeout_s=0.0, ceiling_s=60.0, warmup_steps=3, poll_s=0.02, stream=out)
  dog.start()
  for step in range(1, 7):
    dog.dispatched(step)
    dog.completed(1, 100.0 if step <= 3 else 0.1)  # warm-up steps (slow) must not count
  release = threading.Event()
  sleeper = threading.Thread(target=_stall_forever_in_a_named_function, args=(release,), daemon=True)
  sleeper.start()
  assert dog.limit() == pytest.approx(0.3)
  dog.dispatched(7)
  t0 = time.monotonic()
  while not fake_exit and time.monotonic() - t0 < 10:
    time.sleep(0.02)
  release.set()
  dog.close()
  assert fake_exit == [124] and 0.25 < time.monotonic() - t0 < 5
  out.seek(0)
  text = out.read()
  assert "watchdog: step 7 made no progress" in text and "factor 3 x median step 0.1s" in text
  assert "_stall_forever_in_a_named_function" in text  # every thread's Python stack


def test_quiet_while_steps_complete_during_compiles_and_under_the_floor(fake_exit, tmp_path):
  out = open(tmp_path / "stderr.txt", "w")  # a real file: a firing watchdog could dump its stacks
  dog = wd.Watchdog(factor=2.0, min_timeout_s=0.5, ceiling_s=0.9, warmup_steps=0, poll_s=0.02, stream=out)
  dog.start()
  dog.dispatched(1)
  dog.completed(1, 0.01)  # limit = max(0.5, 2 x 0.01) = 0.5 s
  assert dog.limit() == pytest.approx(0.5)
  dog.dispatched(2)
  time.sleep(0.2)  # under the floor
  dog.completed(1, 0.01)
  with dog.phase("compile", timed=False):  # compiles are never timed, not even against the ceiling
    time.sleep(1.2)
  with dog.phase("eval"):  # evaluation is held to the ceiling only, not to the step limit
    assert dog.limit() == pytest.approx(0.9)
    time.sleep(0.7)
  dog.dispatched(3)
  dog.dispatched(4)  # two steps in flight: twice the step limit (capped by the ceiling)
  assert dog.limit() == pytest.approx(0.9)
  time.sleep(0.7)
  dog.completed(2, 0.01)
  dog.close()
  assert fake_exit == []


def test_ceiling_applies_during_eval_and_before_any_median(fake_exit, tmp_path):
  out = open(tmp_path / "stderr.txt", "w")
  dog = wd.Watchdog(factor=100.0, min_timeout_s=100.0, ceiling_s=0.3, warmup_steps=5, poll_s=0.02, stream=out)
  dog.start()
  dog.dispatched(1)
  assert dog.limit() == pytest.approx(0.3)  # no median yet: only the ceiling
  t0 = time.monotonic()
  while not fake_exit and time.monotonic() - t0 < 5:
    time.sleep(0.02)
  assert fake_exit == [124]
  dog2 = wd.Watchdog(factor=100.0, min_timeout_s=100.0, ceiling_s=0.3, warmup_steps=0, poll_s=0.02,
                     stream=out).start()
  dog2.dispatched(1)
  dog2.completed(1, 1.0)
  with dog2.phase("checkpoint"):
    t0 = time.monotonic()
    while len(fake_exit) < 2 and time.monotonic() - t0 < 5:
      time.sleep(0.02)
  assert fake_exit == [124, 124]


def test_disabled_watchdog_never_starts():
  import ml_collections
  cfg = ml_collections.ConfigDict(dict(enabled=False, factor=1.0, min_timeout_s=0.0, ceiling_s=0.01, warmup_steps=0))
  dog = wd.from_config(cfg)
  dog.dispatched(1)
  with dog.phase("eval"):
    pass
  assert not dog._thread.is_alive()  # pylint: disable=protected-access


HANG_CONFIG = """
import runpy, time
def get_config(arg=None):
  c = runpy.run_path({tiny!r})["get_config"]("40")
  c.train.batch_size = 4
  c.data.seq_buckets = (128,)
  c.checkpoint.every_steps = 1000
  c.eval.every_steps = 0
  c.log.every_steps = 1
  c.log.peak_tflops = 1.0
  c.watchdog.factor = 20.0
  c.watchdog.min_timeout_s = 3.0
  c.watchdog.ceiling_s = 600.0
  c.watchdog.warmup_steps = 2
  from qwen_audio_jax.train import loop  # a host-side step stalls, as a stuck input or collective would
  original, calls = loop.device_batch, [0]
  def device_batch(host, mel_frames, *args, **kwargs):
    calls[0] += 1
    if calls[0] == 8:
      time.sleep(900)
    return original(host, mel_frames, *args, **kwargs)
  loop.device_batch = device_batch
  return c
"""


def test_hanging_step_in_a_real_run_dumps_stacks_and_exits_124(tmp_path):
  config = tmp_path / "hang.py"
  config.write_text(HANG_CONFIG.format(tiny=os.path.join(ROOT, "configs", "tiny_synthetic.py")))
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_backend_optimization_level=0")
  p = subprocess.run([sys.executable, "-m", "qwen_audio_jax.train", f"--config={config}",
                      f"--workdir={tmp_path / 'run'}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
  assert p.returncode == 124, p.stderr[-3000:]
  assert "step 7/40" in p.stdout and "step 8/40" not in p.stdout
  assert "watchdog: step 7 made no progress" in p.stderr
  assert "in device_batch" in p.stderr and 'Thread 0x' in p.stderr  # faulthandler's dump of every thread
