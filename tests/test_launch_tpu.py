"""`python -m launch.tpu`: the printed gcloud commands per topology (--dry-run), quoting, the installed
interpreter, worker failures reaching the exit status (a fake `gcloud` on PATH), teardown, the plan gate."""

import json
import os
import shlex
import subprocess
import sys

import pytest

from launch.tpu import commands
from qwen_audio_jax.plan import topology

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAM = ["--", "train", "--config=configs/tiny_synthetic.py", "--workdir=gs://b/runs/my run"]

FAKE_GCLOUD = """#!/usr/bin/env bash
echo "$*" >> "$FAKE_GCLOUD_LOG"
if [[ "$*" == *"queued-resources describe"* ]]; then echo ACTIVE; exit 0; fi
if [[ -n "$FAKE_GCLOUD_FAIL" && "$*" == *"$FAKE_GCLOUD_FAIL"* ]]; then echo "worker 3 failed" >&2; exit 7; fi
exit 0
"""


def _launch(*args, env=None):
  return subprocess.run([sys.executable, "-m", "launch.tpu", *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=120, env=env or dict(os.environ))


def _commands(stdout):
  return [shlex.split(line[2:].split("    # ")[0]) for line in stdout.splitlines() if line.startswith("+ ")]


def _remote(cmd):
  return next(a for a in cmd if a.startswith("--command="))[len("--command="):]


@pytest.mark.parametrize("topo,extra,create,accel,runtime", [
    ("v5p-64", [], ["tpu-vm", "create", "qa"], "--accelerator-type=v5p-64", "--version=v2-alpha-tpuv5"),
    ("v5e-16", ["--provisioning=spot"], ["tpu-vm", "create", "qa"], "--accelerator-type=v5litepod-16",
     "--version=v2-alpha-tpuv5-lite"),
    ("v6e-64", ["--provisioning=queued"], ["queued-resources", "create", "qa"], "--accelerator-type=v6e-64",
     "--runtime-version=v2-alpha-tpuv6e"),
    ("v4-32", [], ["tpu-vm", "create", "qa"], "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base")])
def test_dry_run_prints_every_command(topo, extra, create, accel, runtime):
  p = _launch("up", "--name=qa", "--zone=z1", f"--topology={topo}", "--cache_root=gs://b/cache", *extra,
              "--dry-run", *PROGRAM)
  assert p.returncode == 0, p.stderr
  cmds = _commands(p.stdout)
  assert cmds[0][1:4] == ["-m", "qwen_audio_jax.plan", "--config=configs/tiny_synthetic.py"]
  assert f"--topology={topo}" in cmds[0]
  gcloud = [c for c in cmds if c[0] == "gcloud"]
  assert gcloud[0][3:6] == create and accel in gcloud[0] and runtime in gcloud[0] and "--zone=z1" in gcloud[0]
  assert ("--spot" in gcloud[0]) == ("--provisioning=spot" in extra)
  ssh = [c for c in gcloud if c[3:5] == ["tpu-vm", "ssh"]]
  assert len(ssh) == 2 and all("--worker=all" in c for c in ssh)  # install, run
  assert "pip install -q -c constraints.txt -e '.[tpu]'" in _remote(ssh[0])
  run = shlex.split(_remote(ssh[1]).split("; ")[-1].split(" 2>&1 | ")[0])
  assert run == [".venv/bin/python", "-m", "qwen_audio_jax.train", "--config=configs/tiny_synthetic.py",
                 "--workdir=gs://b/runs/my run", "--config.distributed.mode=on"]  # spaces survive quoting
  remote = _remote(ssh[1])
  assert remote.startswith("set -euo pipefail;") and f"JAX_COMPILATION_CACHE_DIR=gs://b/cache/{topo}x1" in remote
  assert "LIBTPU_INIT_ARGS=" in remote and "| tee -a logs/train_$(hostname).log" in remote
  assert gcloud[-1][3:5] in (["tpu-vm", "delete"], ["queued-resources", "delete"])  # torn down at the end


def test_multislice_uses_queued_resources_and_runs_on_every_slice():
  p = _launch("up", "--name=qa", "--zone=z1", "--topology=v5p-128", "--num_slices=2", "--provisioning=queued",
              "--skip_plan", "--dry-run", *PROGRAM)
  assert p.returncode == 0, p.stderr
  cmds = [c for c in _commands(p.stdout) if c[0] == "gcloud"]
  assert "--node-count=2" in cmds[0] and "--node-prefix=qa" in cmds[0]
  nodes = [c[5] for c in cmds if c[3:5] == ["tpu-vm", "ssh"]]
  assert nodes == ["qa-0", "qa-1", "qa-0", "qa-1"]
  assert "JAX_COMPILATION_CACHE_DIR=gs://b" not in p.stdout  # no cache root given: no cache


def test_multislice_needs_queued_and_help_works():
  p = _launch("up", "--name=qa", "--zone=z1", "--topology=v5p-128", "--num_slices=2", "--dry-run", *PROGRAM)
  assert p.returncode == 2 and "--provisioning=queued" in p.stderr
  h = _launch("--help")
  assert h.returncode == 0 and "usage: python -m launch.tpu" in h.stdout and "--dry-run" in h.stdout
  bad = _launch("delete", "--name=qa", "--zone=z1", "--topology=v5p-63")
  assert bad.returncode == 2 and "launch.tpu: --topology='v5p-63'" in bad.stderr


def test_remote_run_script_fails_when_the_program_fails(tmp_path):
  """The worker script itself (run with bash here): a failing program is a failing worker despite `| tee`."""
  spec = commands.Spec("qa", "z1", topology.parse("v5e-4"), remote_dir=str(tmp_path / "my dir"))
  venv = tmp_path / "my dir" / ".venv" / "bin"
  venv.mkdir(parents=True)
  (venv / "python").write_text("#!/usr/bin/env bash\nprintf 'args:'; printf ' <%s>' \"$@\"; echo\nexit 5\n")
  (venv / "python").chmod(0o755)
  script = commands.run_script(spec, "train", ["--workdir=/a b"])
  p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
  assert p.returncode == 5
  assert "args: <-m> <qwen_audio_jax.train> <--workdir=/a b>" in p.stdout  # one argument, space kept
  logs = list((tmp_path / "my dir" / "logs").glob("train_*.log"))
  assert len(logs) == 1 and "args:" in logs[0].read_text()


@pytest.fixture
def fake_gcloud(tmp_path):
  bindir = tmp_path / "bin"
  bindir.mkdir()
  (bindir / "gcloud").write_text(FAKE_GCLOUD)
  (bindir / "gcloud").chmod(0o755)
  log = tmp_path / "gcloud.log"
  env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", FAKE_GCLOUD_LOG=str(log))
  return env, log


def _fitting_plan(tmp_path, fits=True, topo="v5e-4"):
  path = tmp_path / "plan.json"
  path.write_text(json.dumps({"fits": fits, "config": "configs/tiny_synthetic.py", "overrides": [],
                              "target": {"topology": topo, "num_slices": 1, "describe": topo, "backend": "cpu"},
                              "verdict": "DOES NOT FIT: train (99 GiB per device)"}))
  return path


def test_failed_worker_is_a_failure_and_the_slice_is_still_deleted(tmp_path, fake_gcloud):
  env, log = fake_gcloud
  env["FAKE_GCLOUD_FAIL"] = "qwen_audio_jax.train"  # the run's ssh fails on a worker
  plan = _fitting_plan(tmp_path)
  p = _launch("up", "--name=qa", "--zone=z1", "--topology=v5e-4", f"--plan_json={plan}", "--source=git",
              "--repo=https://example.invalid/r.git", *PROGRAM, env=env)
  assert p.returncode == 7, p.stderr
  assert "train on the workers failed on slice 0 with status 7" in p.stderr
  calls = log.read_text().splitlines()
  assert calls[0].startswith("compute tpus tpu-vm create qa")
  assert any("qwen_audio_jax.train" in c for c in calls)
  assert calls[-1].startswith("compute tpus tpu-vm delete qa")


def test_success_runs_create_install_run_delete_in_order(tmp_path, fake_gcloud):
  env, log = fake_gcloud
  p = _launch("up", "--name=qa", "--zone=z1", "--topology=v5e-4", f"--plan_json={_fitting_plan(tmp_path)}",
              "--provisioning=queued", *PROGRAM, env=env)
  assert p.returncode == 0, p.stderr
  calls = log.read_text().splitlines()
  kinds = [" ".join(c.split()[2:4]) for c in calls]
  assert kinds == ["queued-resources create", "queued-resources describe", "tpu-vm scp", "tpu-vm ssh",
                   "tpu-vm ssh", "queued-resources delete"]


def test_plan_gate_refuses_a_config_that_does_not_fit(tmp_path, fake_gcloud):
  env, log = fake_gcloud
  p = _launch("up", "--name=qa", "--zone=z1", "--topology=v5e-4",
              f"--plan_json={_fitting_plan(tmp_path, fits=False)}", *PROGRAM, env=env)
  assert p.returncode == 3 and "refusing to start" in p.stderr and "99 GiB" in p.stderr
  assert not log.exists()  # nothing created
  other = _launch("up", "--name=qa", "--zone=z1", "--topology=v6e-64", f"--plan_json={_fitting_plan(tmp_path)}",
                  *PROGRAM, env=env)
  assert other.returncode == 2 and "is for v5e-4" in other.stderr and not log.exists()
