"""A real 2-process run (jax.distributed on 127.0.0.1, gloo CPU collectives, 2 devices each) trains,
evaluates and saves; its checkpoint then restores in this single process (one device) and gives the
same held-out loss.
"""

import json
import os
import socket
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
  c.eval.sweep_limit = 2  # both processes decode the same validation clips; process 0 scores them
  c.log.every_steps = 1
  c.log.peak_tflops = 1.0
  return c
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("mp")
  config = tmp / "mp_config.py"
  config.write_text(CONFIG.format(tiny=os.path.join(ROOT, "configs", "tiny_synthetic.py"), total=TOTAL,
                                  cache=str(tmp / "xla_cache")))
  workdir = tmp / "run"
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_backend_optimization_level=0")
  procs = [subprocess.Popen(
      [sys.executable, "-m", "qwen_audio_jax.train", f"--config={config}", f"--workdir={workdir}",
       f"--config.distributed.coordinator=127.0.0.1:{port}", "--config.distributed.num_processes=2",
       f"--config.distributed.process_id={i}", "--config.distributed.cpu_devices=2"],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-4000:]
  return config, workdir, outs


def test_two_processes_train_on_hybrid_mesh(run):
  _, workdir, outs = run
  assert "mesh data=2 fsdp=2 tensor=1" in outs[0][0]
  assert "step 1/" not in outs[1][0] and "mesh" not in outs[1][0]  # only process 0 logs
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


def test_two_process_generation_equals_one_process_decode_of_the_same_params(run):
  """Both processes decoded the validation clips on the global mesh; process 0 alone scored and wrote
  them. Decoding the restored best params here (one device) gives the same answers and figures."""
  import importlib.util
  import jax
  from qwen_audio_jax.eval.during_training import GenerationEval
  from qwen_audio_jax.train import checkpointing, loop
  config, workdir, outs = run
  assert "eval step" in outs[0][0] and "eval step" not in outs[1][0]
  with open(workdir / "metrics.jsonl") as f:
    [logged] = [json.loads(line) for line in f if "eval_loss" in line]
  spec = importlib.util.spec_from_file_location("mp_config", config)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  cfg = module.get_config()
  cfg.mesh.ici, cfg.mesh.dcn = (1, 1, 1), (1, 1, 1)
  mesh, mcfg, plan, _ = loop.setup(cfg, str(workdir))
  ckpt = checkpointing.Checkpoints(str(workdir), best_keep=0)
  state, _ = ckpt.restore(plan)
  ckpt.close()
  here = GenerationEval.from_run_config(cfg, str(workdir / "again"))
  figures = here.run(TOTAL, mcfg, here.params_of(plan, state), mesh)
  for name in here.names:
    assert figures[name] == logged[name] or (figures[name] != figures[name] and logged[name] != logged[name]), name
  for d in here.datasets:
    rows = [[json.loads(line) for line in open(base / "generate" / str(TOTAL) / f"{d['name']}.jsonl")]
            for base in (workdir, workdir / "again")]
    assert len(rows[0]) == 2 and [r["ids"] for r in rows[0]] == [r["ids"] for r in rows[1]], d["name"]
  assert jax.device_count() == 1
