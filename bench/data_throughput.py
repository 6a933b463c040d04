"""P5: the data pipeline's throughput against what the tiny_synthetic run consumes.

configs/tiny_synthetic.py as the trainer builds it: the grain iterator (`make_train_iterator`: synthetic
multi-task records, tokenizer, prompts, log-mel of each clip, collation into buckets; its own workers
and threads settings) and the jitted train step with SpecAugment on the pipeline's own batches. Both
are timed in the same interleaved rounds (one batch drawn, one step run) after warm-up; ratio =
pipeline examples/s over the step's examples/s (>= 2: the input never starves the step, with margin).
"""

from __future__ import annotations

import importlib.util
import os
import tempfile

import jax

from bench import common, rows
from qwen_audio_jax.data import pipeline
from qwen_audio_jax.sharding import partition
from qwen_audio_jax.train import loop, specaugment, state as state_lib, step as step_lib

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "tiny_synthetic.py")


def tiny_run_config():
  spec = importlib.util.spec_from_file_location("tiny_synthetic", CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def row(quick: bool) -> dict:
  cfg = tiny_run_config()
  batch_size = int(cfg.train.batch_size)
  data = pipeline.make_train_iterator(cfg.data, global_batch_size=batch_size, seed=0,
                                      mel_frames=int(cfg.train.mel_frames))  # as train/loop.py builds it
  with tempfile.TemporaryDirectory() as workdir:
    mesh, _, plan, schedule = loop.setup(cfg, workdir)
  step = step_lib.make_train_step(plan, cfg.train, schedule, specaugment.from_config(cfg.train.specaugment))
  state = {"s": state_lib.create(plan, 0)}
  host = loop.device_batch(next(data), int(cfg.train.mel_frames))
  batch = partition.host_to_global(host, mesh)

  def run_step():
    with partition.activation_context(mesh):
      state["s"], m = step(state["s"], batch)
    jax.block_until_ready(m["loss"])

  t = common.time_interleaved({"pipeline": lambda: next(data), "step": run_step}, 5 if quick else 20, warmup=2)
  data.close()
  produce = batch_size / t["pipeline"]["median_s"]
  consume = batch_size / t["step"]["median_s"]
  ratio = produce / consume
  return {"ours": f"pipeline {produce:.1f} examples/s ({1e3 * t['pipeline']['median_s']:.0f} ms/batch of {batch_size})",
          "reference": f"tiny_synthetic train step consumes {consume:.1f} examples/s "
                       f"({1e3 * t['step']['median_s']:.0f} ms/step)",
          "value": ratio, "met": ratio >= 2.0,
          "details": {"pipeline": t["pipeline"], "step": t["step"], "batch_size": batch_size,
                      "step_batch_shape": list(host["input_ids"].shape), "num_workers": int(cfg.data.num_workers),
                      "num_threads": int(cfg.data.num_threads)},
          "notes": [f"configs/tiny_synthetic.py (num_workers={int(cfg.data.num_workers)}, batch {batch_size}, "
                    f"seq buckets {tuple(cfg.data.seq_buckets)}); the step runs on the pipeline's first batch "
                    f"{list(host['input_ids'].shape)}, mel crop {int(cfg.train.mel_frames) or 3000} frames, "
                    f"SpecAugment {'on' if cfg.train.specaugment.enabled else 'off'} (as configured); both in the "
                    "same process, one after the other (in training they overlap and share the cores)."]}


rows.register(rows.Row("P5", "data pipeline throughput vs tiny_synthetic's step consumption", ">= 2x", row,
                       backends=("any",)))
