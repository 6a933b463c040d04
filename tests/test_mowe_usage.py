"""MoWE router usage per task: counts in the step, shares over a logging window, a real run's logs."""

import json
import os
import runpy
import subprocess
import sys

import jax.numpy as jnp
import numpy as np

from qwen_audio_jax.data import batching
from qwen_audio_jax.data.examples import Encoded
from qwen_audio_jax.data.records import TASKS
from qwen_audio_jax.model import mowe as mowe_lib
from qwen_audio_jax.plan import inputs
from qwen_audio_jax.train import metrics, model_fns

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sown(probs, mask):
  return {"mowe": {"mowe_probs": (jnp.asarray(probs, jnp.float32),), "mowe_mask": (jnp.asarray(mask, jnp.float32),)}}


def test_router_counts_per_task_hand_case():
  probs = [[0.7, 0.3], [0.2, 0.8], [0.6, 0.4], [0.9, 0.1], [0.1, 0.9]]
  mask = [[1, 0], [0, 1], [1, 0], [1, 0], [0, 1]]
  task = jnp.array([0, 2, -1, 0, 0])  # clip 2 has no task; clip 4 is padding (weight 0)
  stats = mowe_lib.router_stats(_sown(probs, mask), 2, jnp.array([1, 1, 1, 1, 0]), task, 3)
  np.testing.assert_array_equal(np.asarray(stats["mowe/task_selected"]), [[2, 0], [0, 0], [0, 1]])
  np.testing.assert_array_equal(np.asarray(stats["mowe/task_clips"]), [2, 0, 1])
  assert "mowe/task_selected" not in mowe_lib.router_stats(_sown(probs, mask), 2)  # no task ids: no counts


def test_window_shares_are_summed_counts_not_a_mean_of_shares():
  steps = [{"loss": 1.0, "mowe/task_selected": np.array([[1.0, 0.0], [0.0, 0.0]]), "mowe/task_clips": np.array([1.0, 0.0])},
           {"loss": 1.0, "mowe/task_selected": np.array([[0.0, 3.0], [0.0, 0.0]]), "mowe/task_clips": np.array([3.0, 0.0])}]
  usage = metrics.task_usage(steps, ("asr", "srwt"))
  assert usage == {"mowe/usage/asr/weak_0": 0.25, "mowe/usage/asr/weak_1": 0.75}  # srwt had no clips: absent
  assert all(set(s) == {"loss"} for s in steps)  # the counts are consumed (no histograms of them)
  line = metrics.format_line(5, 10, {"loss": 1.0, "mowe/aux_loss": 1.2, "mowe/usage/weak_0": 0.25,
                                     "mowe/usage/weak_1": 0.75, **usage})
  assert line.endswith("usage 0.25/0.75\n  mowe usage by task: asr 0.25/0.75"), line


def test_collated_batches_carry_task_ids():
  def enc(task):
    return Encoded(ids=np.arange(5, dtype=np.int32), loss_mask=np.ones(5, np.int32), prompt_length=2,
                   waveforms=[np.zeros(1600, np.float32)], encoder_frames=[5], audio_seconds=0.1, truncated=False,
                   task=task)
  batch = batching.collate_train([enc("asr"), enc(""), None, enc("mna"), enc("other")], buckets=(8,), max_audios=1,
                                 n_mels=80, pad_id=0, mel_frames=20)
  np.testing.assert_array_equal(batch["task_index"], [TASKS.index("asr"), -1, -1, TASKS.index("mna"), -1])


def test_plans_see_the_task_ids():
  cfg = runpy.run_path(os.path.join(ROOT, "configs", "mowe_tiny_synthetic.py"))["get_config"]("2")
  from qwen_audio_jax.sharding import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  mesh = mesh_lib.make_mesh((1, 1, 1))
  batch = inputs.abstract_batch(inputs.batch_shape(cfg, model_fns.resolve_model_config(cfg.model)), mesh)
  assert batch["task_index"].shape == (cfg.train.batch_size,)
  tiny = runpy.run_path(os.path.join(ROOT, "configs", "tiny_synthetic.py"))["get_config"]("2")
  assert "task_index" not in inputs.abstract_batch(
      inputs.batch_shape(tiny, model_fns.resolve_model_config(tiny.model)), mesh)  # other steps unchanged


def test_a_mowe_run_logs_router_usage_per_task(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_backend_optimization_level=0")  # compile fast
  p = subprocess.run([sys.executable, "-m", "qwen_audio_jax.train", "--config=configs/mowe_tiny_synthetic.py:2",
                      f"--workdir={tmp_path / 'w'}", "--config.train.batch_size=8", "--config.log.every_steps=2",
                      "--config.eval.every_steps=0", "--config.eval.sweep=", "--config.eval.best_metric=eval_loss",
                      "--config.checkpoint.every_steps=2", "--config.checkpoint.async_save=False"],
                     cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
  assert p.returncode == 0, p.stderr[-3000:]
  assert "mowe usage by task: " in p.stdout, p.stdout
  rows = [json.loads(l) for l in open(tmp_path / "w" / "metrics.jsonl")]
  last = next(r for r in rows if r.get("step") == 2 and "loss" in r)
  per_task = {k: v for k, v in last.items() if k.startswith("mowe/usage/") and not k.startswith("mowe/usage/weak_")}
  tasks = {k.split("/")[2] for k in per_task}
  assert tasks and tasks <= set(TASKS), per_task  # 16 clips of the six weighted tasks
  for t in tasks:  # top-1: each of the task's clips went to exactly one encoder
    np.testing.assert_allclose(sum(per_task[f"mowe/usage/{t}/weak_{k}"] for k in range(2)), 1.0, rtol=1e-6)
  assert not any(k.startswith("mowe/task_") for r in rows for k in r)  # raw counts are not logged
