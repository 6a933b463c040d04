"""A real 2-process run started by the local rehearsal launcher (`python -m launch.local`: jax.distributed
on 127.0.0.1, gloo CPU collectives, 2 devices each) trains, evaluates and saves; its checkpoint then
restores in this single process (one device) and gives the same held-out loss.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL = 3

CONFIG = """
import runpy
def get_config(arg=None):
  c = runpy.run_path({tiny!r})["get_config"]({total!r})
  c.train.batch_size = 4
  c.train.compilation_cache_dir = {cache!r}
  c.data.seq_buckets = (128,)
  c.mesh.ici = (1, 2, 1)  # fsdp over each process's 2 devices
  c.mesh.dcn = (2, 1, 1)  # data parallel across the 2 processes (hybrid mesh, processes as granules)
  c.checkpoint.every_steps = {total}
  c.eval.every_steps = {total}
  c.eval.batches = 1
  c.eval.batch_size = 4
  c.log.every_steps = 1
  c.log.peak_tflops = 1.0
  return c
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("mp")
  config = tmp / "mp_config.py"
  config.write_text(CONFIG.format(tiny=os.path.join(ROOT, "configs", "tiny_synthetic.py"), total=TOTAL,
                                  cache=str(tmp / "xla_cache")))
  workdir, logdir = tmp / "run", tmp / "logs"
  env = dict(os.environ, XLA_FLAGS="--xla_backend_optimization_level=0")
  proc = subprocess.run(
      [sys.executable, "-m", "launch.local", "-n", "2", "-d", "2", f"--logdir={logdir}", "--timeout=600", "--",
       "train", f"--config={config}", f"--workdir={workdir}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=660)
  assert proc.returncode == 0, proc.stderr[-4000:]
  outs = [(logdir / f"process_{i}.log").read_text() for i in range(2)]
  assert outs[0] in proc.stdout  # process 0 streamed to the terminal
  return config, workdir, outs


def test_two_processes_train_on_hybrid_mesh(run):
  _, workdir, outs = run
  assert "mesh data=2 fsdp=2 tensor=1" in outs[0]
  assert "step 1/" not in outs[1] and "mesh" not in outs[1]  # only process 0 logs
  with open(workdir / "metrics.jsonl") as f:
    recs = [json.loads(line) for line in f]
  losses = [r["loss"] for r in recs if "loss" in r]
  assert len(losses) == TOTAL and all(l == l for l in losses)
  assert (workdir / "checkpoints" / str(TOTAL) / "state").is_dir()
  assert (workdir / "best" / str(TOTAL)).is_dir()
  data = json.loads((workdir / "checkpoints" / str(TOTAL) / "data" / "metadata").read_text())
  assert data["process_count"] == 2 and len(data["states"]) == 2
  assert [s["global_batches"] for s in data["states"]] == [TOTAL, TOTAL]


def test_checkpoint_restores_on_one_process_with_same_eval_loss(run):
  import importlib.util
  import jax
  from qwen_audio_jax.train import checkpointing, loop, step as step_lib
  config, workdir, _ = run
  spec = importlib.util.spec_from_file_location("mp_config", config)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  cfg = module.get_config()
  cfg.mesh.ici, cfg.mesh.dcn = (1, 1, 1), (1, 1, 1)
  mesh, _, plan, _ = loop.setup(cfg, str(workdir))
  assert mesh.size == 1
  ckpt = checkpointing.Checkpoints(str(workdir), best_keep=0)
  state, data_state = ckpt.restore(plan)
  ckpt.close()
  assert int(state["step"]) == TOTAL and data_state["global_batches"] == TOTAL
  batches = loop._eval_batches(cfg, int(cfg.train.mel_frames))
  loss = loop._evaluate(plan, step_lib.make_eval_step(plan), state, batches)
  with open(workdir / "metrics.jsonl") as f:
    logged = [json.loads(line)["eval_loss"] for line in f if "eval_loss" in line]
  assert len(logged) == 1
  assert abs(loss - logged[0]) < 1e-5, (loss, logged[0])
  assert jax.device_count() == 1
