"""A training step of any model config on one device, for timing (P4, remat study) and compile-only
memory analysis: the trainer's own plan, optimizer and jitted step on synthetic right-padded batches.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from qwen_audio_jax.model import config as model_config
from qwen_audio_jax.sharding import mesh as mesh_lib, partition
from qwen_audio_jax.train import checkpointing, defaults, metrics, model_fns, optimizer, state as state_lib, step as step_lib, testing

STAGE_FREEZE = {"stage1": (r"decoder/.*",), "sft": (r"audio_encoder/.*",), "full": ()}


def medium_config(**kw) -> model_config.ModelConfig:
  """A CPU-sized Qwen-Audio: whisper-base-width encoder (4 layers), a 512-wide 4-layer LLM, 8k vocabulary."""
  base = model_config.get_config("tiny-qwen-audio")
  enc = dataclasses.replace(base.encoder, d_model=512, n_heads=8, n_layers=4, mlp_dim=2048)
  dec = dataclasses.replace(base.decoder, vocab_size=8192, d_model=512, n_layers=4, n_heads=8, n_kv_heads=8,
                            head_dim=64, mlp_dim=1408)
  return base.replace(encoder=enc, decoder=dec, audio_start_id=8000, audio_end_id=8001, audio_pad_id=8002,
                      pad_id=8003, **kw)


def tiny_config(**kw) -> model_config.ModelConfig:
  """The tiny_synthetic run's model with the mini vocabulary (train/testing.py)."""
  return model_fns.resolve_model_config(testing.mini_config().model).replace(**kw)


@dataclasses.dataclass
class Step:
  cfg: model_config.ModelConfig
  plan: state_lib.Plan
  step: object  # jitted (state, batch) -> (state, metrics)
  batch: dict  # host numpy batch
  flops: float  # model FLOPs of one step (train/metrics.py)

  def abstract_args(self):
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in self.batch.items()}
    return checkpointing.abstract_with_shardings(self.plan.abstract, self.plan.shardings), batch

  def compiled_temp_bytes(self) -> int:
    """Temporary buffers of the compiled step (activations kept for the backward, workspace)."""
    state, batch = self.abstract_args()
    return int(self.step.jitted.lower(state, batch).compile().memory_analysis().temp_size_in_bytes)


def make_step(cfg: model_config.ModelConfig, stage: str, batch_size: int, seq_len: int, mel_frames: int) -> Step:
  run = defaults.base_config()
  run.train.freeze = STAGE_FREEZE[stage]
  mesh = mesh_lib.make_mesh((1, 1, 1), devices=jax.devices()[:1])
  opt = optimizer.make_optimizer(run.optim, 1000)
  plan = state_lib.make_plan(model_fns.build(cfg), opt, mesh, run.train)
  batch = testing.batch(cfg, seed=0, batch_size=batch_size, seq_len=seq_len, mel_frames=mel_frames)
  mult = metrics.tower_multipliers(plan.mask, False)
  flops = metrics.step_flops(cfg, int(batch["attention_mask"].sum()), seq_len, batch_size, mel_frames, mult)
  return Step(cfg=cfg, plan=plan, step=step_lib.make_train_step(plan, run.train), batch=batch, flops=flops)


def run_fn(s: Step):
  """A zero-argument callable that runs one step (state threaded through, donated) to completion."""
  state = state_lib.create(s.plan, 0)
  batch = partition.host_to_global(s.batch, s.plan.mesh)
  holder = {"state": state}

  def call():
    holder["state"], m = s.step(holder["state"], batch)
    jax.block_until_ready(m["loss"])
  return call


def batch_nbytes(batch: dict) -> int:
  return int(sum(np.asarray(v).nbytes for v in batch.values()))

