"""Start N processes of one program on this machine as the N hosts of a `jax.distributed` run.

Each process gets the coordinator (127.0.0.1:PORT), the process count and its id through JAX's
environment variables (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, read by
qwen_audio_jax/sharding/distributed.py, which then uses gloo CPU collectives), runs on the CPU with
D simulated devices (XLA_FLAGS --xla_force_host_platform_device_count=D), and writes its output to
LOGDIR/process_<i>.log; process 0's output is also streamed here. When one process fails, all others
are stopped and the launcher exits with that process's status and a line naming it.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time

TAIL_LINES = 40


@dataclasses.dataclass
class Result:
  code: int  # 0, the first failing process's status (128 + signal when killed by one), or 124 on timeout
  failed: int | None  # index of the first process that failed
  message: str


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def child_env(base: dict, index: int, count: int, devices: int, port: int) -> dict:
  env = dict(base)
  flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
  env.update(JAX_PLATFORMS="cpu", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(count),
             JAX_PROCESS_ID=str(index),
             XLA_FLAGS=" ".join(flags + [f"--xla_force_host_platform_device_count={devices}"]))
  return env


def _status(code: int) -> int:
  return 128 - code if code < 0 else code


def _tail(path: str, n: int = TAIL_LINES) -> str:
  try:
    with open(path, errors="replace") as f:
      return "".join(f.readlines()[-n:])
  except OSError:
    return ""


def _pump(src, dst_file, echo) -> None:
  for line in iter(src.readline, ""):
    dst_file.write(line)
    dst_file.flush()
    if echo:
      sys.stdout.write(line)
      sys.stdout.flush()


def run(program: list[str], processes: int, devices: int, logdir: str, python: str = sys.executable,
        timeout_s: float = 0.0, grace_s: float = 10.0, env: dict | None = None, cwd: str | None = None) -> Result:
  """Runs `python -m <program...>` N times; returns when all succeed, one fails, or the timeout passes."""
  os.makedirs(logdir, exist_ok=True)
  port = free_port()
  procs, logs, pumps = [], [], []
  base = dict(os.environ if env is None else env)
  for i in range(processes):
    log_path = os.path.join(logdir, f"process_{i}.log")
    log = open(log_path, "w")  # pylint: disable=consider-using-with
    p = subprocess.Popen([python, "-m", *program], env=child_env(base, i, processes, devices, port), cwd=cwd,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    t = threading.Thread(target=_pump, args=(p.stdout, log, i == 0), daemon=True)
    t.start()
    procs.append(p)
    logs.append((log, log_path))
    pumps.append(t)

  forwarded = []

  def forward(signum, _frame):  # SIGTERM/SIGINT to the launcher: every process gets SIGTERM (clean stop)
    forwarded.append(signum)
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)

  old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
  deadline = time.monotonic() + timeout_s if timeout_s > 0 else None
  result = None
  try:
    while result is None:
      codes = [p.poll() for p in procs]
      bad = [i for i, c in enumerate(codes) if c not in (None, 0)]
      if bad and not forwarded:
        i = bad[0]
        result = Result(_status(codes[i]), i, f"launch.local: process {i} of {processes} (pid {procs[i].pid}) exited "
                        f"with status {_status(codes[i])}; stopping the others (log: {logs[i][1]})")
      elif all(c is not None for c in codes):
        code = next((_status(c) for c in codes if c), 0)
        result = Result(code, None, "" if not code else f"launch.local: stopped by signal; status {code}")
      elif deadline and time.monotonic() > deadline:
        result = Result(124, None, f"launch.local: timeout after {timeout_s:.0f}s; stopping all {processes} processes")
      else:
        time.sleep(0.2)
  finally:
    _stop_all(procs, grace_s)
    for t in pumps:
      t.join(timeout=5)
    for log, _ in logs:
      log.close()
    for s, h in old.items():
      signal.signal(s, h)
  if result.failed is not None and result.failed != 0:
    result.message += f"\n--- last lines of {logs[result.failed][1]} ---\n{_tail(logs[result.failed][1])}"
  return result


def _stop_all(procs, grace_s: float) -> None:
  """SIGTERM to every live process group, then SIGKILL after `grace_s`."""
  for p in procs:
    if p.poll() is None:
      try:
        os.killpg(p.pid, signal.SIGTERM)
      except ProcessLookupError:
        pass
  end = time.monotonic() + grace_s
  for p in procs:
    try:
      p.wait(timeout=max(0.1, end - time.monotonic()))
    except subprocess.TimeoutExpired:
      try:
        os.killpg(p.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
      p.wait()
