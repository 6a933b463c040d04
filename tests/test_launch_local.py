"""`python -m launch.local`: N processes with the jax.distributed environment; one failing stops all."""

import os
import subprocess
import sys
import time

from launch.local import runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROGRAM = """
import os, sys, time
i = int(os.environ["JAX_PROCESS_ID"])
print(f"process {i} of {os.environ['JAX_NUM_PROCESSES']} at {os.environ['JAX_COORDINATOR_ADDRESS']} "
      f"platforms {os.environ['JAX_PLATFORMS']} flags {os.environ['XLA_FLAGS']}", flush=True)
if i == int(os.environ.get("FAIL_ID", -1)):
  time.sleep(1.0)
  print("giving up", flush=True)
  sys.exit(7)
time.sleep(float(os.environ.get("SLEEP", "0")))
"""


def _env(tmp_path, **kw):
  (tmp_path / "fake_host.py").write_text(PROGRAM)
  return dict(os.environ, PYTHONPATH=str(tmp_path), XLA_FLAGS="--xla_backend_optimization_level=0 "
              "--xla_force_host_platform_device_count=9", **kw)


def test_all_processes_get_the_distributed_environment(tmp_path):
  res = runner.run(["fake_host"], 3, 4, str(tmp_path / "logs"), env=_env(tmp_path), cwd=str(tmp_path))
  assert res.code == 0 and res.failed is None, res.message
  port = None
  for i in range(3):
    line = (tmp_path / "logs" / f"process_{i}.log").read_text().strip()
    assert line.startswith(f"process {i} of 3 at 127.0.0.1:") and "platforms cpu" in line
    assert line.endswith("flags --xla_backend_optimization_level=0 --xla_force_host_platform_device_count=4")
    addr = line.split(" at ")[1].split()[0]
    assert port in (None, addr)
    port = addr


def test_one_failure_stops_the_others_and_names_the_process(tmp_path):
  t0 = time.time()
  res = runner.run(["fake_host"], 3, 1, str(tmp_path / "logs"), env=_env(tmp_path, FAIL_ID="1", SLEEP="120"),
                   cwd=str(tmp_path), grace_s=5)
  assert time.time() - t0 < 60  # the sleepers were stopped, not waited for
  assert res.code == 7 and res.failed == 1
  assert "process 1 of 3" in res.message and "status 7" in res.message and "giving up" in res.message


def test_cli_exit_status_and_usage(tmp_path):
  env = _env(tmp_path, FAIL_ID="0", SLEEP="120")
  (tmp_path / "fakepkg").mkdir()
  (tmp_path / "fakepkg" / "__init__.py").write_text("")
  (tmp_path / "fakepkg" / "host.py").write_text(PROGRAM)
  env["PYTHONPATH"] = f"{tmp_path}:{ROOT}"
  cli = [sys.executable, "-m", "launch.local", "-n", "2", "-d", "1", f"--logdir={tmp_path / 'l'}", "--"]
  p = subprocess.run(cli + ["fakepkg.host"], cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
  assert p.returncode == 7 and "launch.local: process 0 of 2" in p.stderr and "giving up" in p.stdout
  p = subprocess.run(cli + ["no_such_program"], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                     timeout=120)  # a bare name is qwen_audio_jax.<name>
  assert p.returncode == 1 and "No module named qwen_audio_jax.no_such_program" in p.stdout + p.stderr
  empty = subprocess.run([sys.executable, "-m", "launch.local"], cwd=ROOT, capture_output=True, text=True, timeout=60)
  assert empty.returncode == 2 and "no program given" in empty.stderr


def test_timeout_stops_everything(tmp_path):
  res = runner.run(["fake_host"], 2, 1, str(tmp_path / "logs"), env=_env(tmp_path, SLEEP="120"), cwd=str(tmp_path),
                   timeout_s=3, grace_s=2)
  assert res.code == 124 and "timeout" in res.message
