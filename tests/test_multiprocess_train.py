"""A real 2-process run started by the local rehearsal launcher (`python -m launch.local`: jax.distributed
on 127.0.0.1, gloo CPU collectives, 2 devices each) trains, evaluates and saves; its per-step losses equal a
1-process, 1-device run of the same global batches; its checkpoint then restores in this single process
(one device) and gives the same held-out loss. Process 0's TensorBoard events and loss chart are read back.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL = 3
LOSS_TOL = 5e-7  # relative; measured 8e-8 (2 processes x 2 devices vs 1 device: fp32 reduction order)

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


def _losses(workdir) -> dict:
  with open(workdir / "metrics.jsonl") as f:
    recs = [json.loads(line) for line in f]
  return {"loss": {r["step"]: r["loss"] for r in recs if "loss" in r},
          "eval_loss": {r["step"]: r["eval_loss"] for r in recs if "eval_loss" in r}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """The 2-process run and, at the same time, the 1-process reference run of the same config."""
  tmp = tmp_path_factory.mktemp("mp")
  config = tmp / "mp_config.py"
  config.write_text(CONFIG.format(tiny=os.path.join(ROOT, "configs", "tiny_synthetic.py"), total=TOTAL,
                                  cache=str(tmp / "xla_cache")))
  workdir, single, logdir = tmp / "run", tmp / "single", tmp / "logs"
  env = dict(os.environ, XLA_FLAGS="--xla_backend_optimization_level=0")
  two = subprocess.Popen(
      [sys.executable, "-m", "launch.local", "-n", "2", "-d", "2", f"--logdir={logdir}", "--timeout=900", "--",
       "train", f"--config={config}", f"--workdir={workdir}"],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  one = subprocess.Popen(  # the 1-process reference, at the same time
      [sys.executable, "-m", "qwen_audio_jax.train", f"--config={config}", f"--workdir={single}",
       "--config.mesh.ici=(1,1,1)", "--config.mesh.dcn=(1,1,1)", "--config.distributed.mode=off"],
      cwd=ROOT, env=dict(env, JAX_PLATFORMS="cpu"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  two_out, one_out = two.communicate(timeout=960), one.communicate(timeout=960)
  assert two.returncode == 0, two_out[1][-4000:]
  assert one.returncode == 0, one_out[1][-4000:]
  outs = [(logdir / f"process_{i}.log").read_text() for i in range(2)]
  assert outs[0] in two_out[0]  # process 0 streamed to the terminal
  return config, workdir, outs, single


def test_two_processes_train_on_hybrid_mesh(run):
  _, workdir, outs, _ = run
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
  config, workdir, _, _ = run
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
  from qwen_audio_jax.data import config as data_config
  data_cfg = data_config.as_config(cfg.data)
  batches = loop.eval_batches(cfg, data_cfg, data_config.eval_entries(data_cfg, cfg.eval.split))
  loss = loop._evaluate(plan, step_lib.make_eval_step(plan), state, batches)
  with open(workdir / "metrics.jsonl") as f:
    logged = [json.loads(line)["eval_loss"] for line in f if "eval_loss" in line]
  assert len(logged) == 1
  assert abs(loss - logged[0]) < 1e-5, (loss, logged[0])
  assert jax.device_count() == 1


def test_losses_equal_one_process_run_of_the_same_global_batches(run):
  """Same seeds and global batches on 1 device: every step's loss and the eval loss agree to fp32 reduction
  order (the gradients are all-reduced over 4 devices in the 2-process run)."""
  _, workdir, _, single = run
  two, one = _losses(workdir), _losses(single)
  assert sorted(two["loss"]) == sorted(one["loss"]) == list(range(1, TOTAL + 1))
  rel = {s: abs(two["loss"][s] - one["loss"][s]) / abs(one["loss"][s]) for s in one["loss"]}
  rel_eval = abs(two["eval_loss"][TOTAL] - one["eval_loss"][TOTAL]) / one["eval_loss"][TOTAL]
  print(f"2-process vs 1-process loss rel diff per step {rel}, eval {rel_eval:.2e}")
  assert max(rel.values()) <= LOSS_TOL and rel_eval <= LOSS_TOL
  assert len(set(one["loss"].values())) == TOTAL  # the steps differ from each other: nothing is constant


def test_process_zero_writes_tensorboard_events_and_chart(run):
  _, workdir, _, _ = run
  from test_train_parts import check_matplotlib_png, read_events
  acc = read_events(workdir / "tensorboard")
  losses = _losses(workdir)
  assert {e.step: e.value for e in acc.Scalars("loss")} == pytest.approx(losses["loss"], rel=1e-6)
  assert [e.step for e in acc.Scalars("eval_loss")] == [TOTAL]
  tags = acc.Tags()
  towers = ("audio_encoder", "projector", "decoder")  # tiny_synthetic trains everything
  for tower in towers:
    assert f"grad_norm/{tower}" in tags["scalars"] and f"grad_norms/{tower}" in tags["histograms"]
    assert all(e.value > 0 for e in acc.Scalars(f"grad_norm/{tower}"))
  for e in acc.Scalars("grad_norm"):  # the towers' norms make up the global norm
    parts = [acc.Scalars(f"grad_norm/{t}")[e.step - 1].value for t in towers]
    assert e.value == pytest.approx(sum(p * p for p in parts) ** 0.5, rel=1e-5)
  check_matplotlib_png(workdir / "loss.png", (800, 500))
