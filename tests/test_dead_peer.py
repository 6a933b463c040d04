"""A dead peer in a multi-process run never leaves the others waiting forever.

* Under `launch.local`, kill -9 of one of 2 processes stops the other and the launcher exits with 137,
  naming the process, within seconds.
* Without a launcher (two bare jax.distributed processes in a collective loop, as on separate hosts),
  the survivor exits non-zero once the coordination service misses the dead one's heartbeats
  (`distributed.heartbeat_timeout_s`), well within 120 s. Both directions: the coordinator dies, or not.
A process that is alive but stuck is caught by the hang watchdog (tests/test_watchdog.py, real run, exit 124).
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from launch.local import runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEARTBEAT_S = 10

PEER = """
import os, sys, time
import numpy as np
import jax
from jax.experimental import multihost_utils
from qwen_audio_jax.sharding import distributed
distributed.initialize("on", cpu_devices=1, heartbeat_timeout_s={heartbeat})
print("ready", jax.process_index(), flush=True)
for i in range(100000):
  multihost_utils.process_allgather(np.array([i], np.int32))
  if i % 20 == 0:
    print("tick", i, flush=True)
  time.sleep(0.05)
"""


def _peers(tmp_path):
  program = tmp_path / "peer.py"
  program.write_text(PEER.format(heartbeat=HEARTBEAT_S))
  port = runner.free_port()
  procs = []
  for i in range(2):
    env = runner.child_env(dict(os.environ, PYTHONPATH=ROOT), i, 2, 1, port)
    env["JAX_PLATFORMS"] = "cpu"
    procs.append(subprocess.Popen([sys.executable, str(program)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True))
  return procs


def _wait_for(proc, word, timeout=120):
  t0 = time.time()
  for line in proc.stdout:
    if line.startswith(word):
      return
    if time.time() - t0 > timeout:
      break
  raise AssertionError(f"no {word!r} line")


@pytest.mark.parametrize("dead", [1, 0], ids=["worker-dies", "coordinator-dies"])
def test_survivor_exits_nonzero_within_120s_without_a_launcher(tmp_path, dead):
  procs = _peers(tmp_path)
  try:
    for p in procs:
      _wait_for(p, "tick")
    survivor = procs[1 - dead]
    procs[dead].send_signal(signal.SIGKILL)
    t0 = time.time()
    try:
      rc = survivor.wait(timeout=120)
    except subprocess.TimeoutExpired:
      pytest.fail("the survivor still waits 120 s after its peer died")
    surfaced = time.time() - t0
    out = survivor.stdout.read()
    tail = out[-2000:]
    print(f"DEAD_PEER dead={dead} survivor_rc={rc} surfaced_s={surfaced:.1f}\n{tail[-1500:]}")
    assert rc != 0
    assert surfaced < 120
    # the coordination service's words (which one depends on timing: a missed heartbeat, or the socket of a
    # dead coordinator closing) anywhere in the survivor's output (the C++ stack trace follows them)
    assert any(m in out for m in ("heartbeat timeout", "Connection closed by peer", "CoordinationServiceError",
                                  "Socket closed"))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()


SLEEPER = """
import os, time
with open(os.path.join(os.environ["PID_DIR"], "pid_" + os.environ["JAX_PROCESS_ID"]), "w") as f:
  f.write(str(os.getpid()))
time.sleep(300)
"""


def test_launcher_stops_all_when_one_is_killed(tmp_path):
  (tmp_path / "fakehost").mkdir()
  (tmp_path / "fakehost" / "__init__.py").write_text("")
  (tmp_path / "fakehost" / "sleeper.py").write_text(SLEEPER)
  cmd = [sys.executable, "-m", "launch.local", "-n", "2", "-d", "1", "--logdir", str(tmp_path / "logs"), "--",
         "fakehost.sleeper"]
  env = dict(os.environ, PYTHONPATH=f"{ROOT}:{tmp_path}", PID_DIR=str(tmp_path))
  launcher = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
  files = [tmp_path / f"pid_{i}" for i in range(2)]
  deadline = time.time() + 60
  while not all(f.exists() and f.read_text() for f in files) and time.time() < deadline:
    time.sleep(0.1)
  pids = [int(f.read_text()) for f in files]
  os.kill(pids[1], signal.SIGKILL)
  t0 = time.time()
  rc = launcher.wait(timeout=120)
  surfaced = time.time() - t0
  err = launcher.stderr.read()
  print(f"LAUNCHER rc={rc} surfaced_s={surfaced:.1f} {err.strip().splitlines()[-1:]}")
  assert rc == 128 + signal.SIGKILL
  assert "process 1 of 2" in err
  assert surfaced < 30
  time.sleep(0.5)
  with pytest.raises(ProcessLookupError):
    os.kill(pids[0], 0)  # the other one was stopped too
