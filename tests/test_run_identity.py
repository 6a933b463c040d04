"""Start-up check that every process runs the same config and code: hashes, the message, and a real
2-process run whose processes disagree failing before anything compiles."""

import os
import subprocess
import sys

from qwen_audio_jax.train import defaults, run_identity

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_config_digest_ignores_only_per_process_fields():
  a, b = defaults.base_config(), defaults.base_config()
  b.distributed.process_id = 3
  assert run_identity.config_digest(a, "/w") == run_identity.config_digest(b, "/w")
  b.optim.lr = 2e-4
  assert run_identity.config_digest(a, "/w") != run_identity.config_digest(b, "/w")
  assert run_identity.config_digest(a, "/w") != run_identity.config_digest(a, "/other")
  c = defaults.base_config()
  c.distributed.num_processes = 4
  assert run_identity.config_digest(a, "/w") != run_identity.config_digest(c, "/w")


def test_code_digest_covers_every_source_file(tmp_path):
  (tmp_path / "pkg" / "sub").mkdir(parents=True)
  (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
  (tmp_path / "pkg" / "sub" / "b.py").write_text("y = 2\n")
  (tmp_path / "pkg" / "notes.txt").write_text("not code")
  first = run_identity.code_digest(str(tmp_path / "pkg"))
  (tmp_path / "pkg" / "notes.txt").write_text("changed")
  assert run_identity.code_digest(str(tmp_path / "pkg")) == first
  (tmp_path / "pkg" / "sub" / "b.py").write_text("y = 3\n")
  assert run_identity.code_digest(str(tmp_path / "pkg")) != first
  assert len(run_identity.code_digest()) == 64


def test_mismatch_message_names_the_processes():
  same = ("c" * 64, "d" * 64)
  assert run_identity.mismatches([same, same, same]) == ""
  msg = run_identity.mismatches([same, same, ("e" * 64, "d" * 64), (same[0], "f" * 64)])
  assert "config hash differs from process 0's cccccccccccc: process 2 has eeeeeeeeeeee" in msg
  assert "code hash differs from process 0's dddddddddddd: process 3 has ffffffffffff" in msg
  assert "process 1" not in msg


MISMATCH_CONFIG = """
import os, runpy
def get_config(arg=None):
  c = runpy.run_path({tiny!r})["get_config"]("3")
  c.train.batch_size = 4
  c.mesh.ici, c.mesh.dcn = (1, 2, 1), (2, 1, 1)
  if os.environ.get("JAX_PROCESS_ID") == "1":
    c.optim.lr = 5e-3  # this host was started with another config
  return c
"""


def test_two_processes_with_different_configs_fail_before_compiling(tmp_path):
  config = tmp_path / "mismatch.py"
  config.write_text(MISMATCH_CONFIG.format(tiny=os.path.join(ROOT, "configs", "tiny_synthetic.py")))
  p = subprocess.run([sys.executable, "-m", "launch.local", "-n", "2", "-d", "2", f"--logdir={tmp_path / 'logs'}",
                      "--timeout=300", "--", "train", f"--config={config}", f"--workdir={tmp_path / 'run'}"],
                     cwd=ROOT, capture_output=True, text=True, timeout=360)
  assert p.returncode not in (0, 124), p.stderr[-3000:]
  logs = "".join((tmp_path / "logs" / f"process_{i}.log").read_text() for i in range(2))
  assert "RunMismatchError: processes disagree: config hash differs from process 0's" in logs
  assert "process 1 has" in logs and "code hash" not in logs
  assert "compiled train step" not in logs and not (tmp_path / "run" / "config.json").exists()
