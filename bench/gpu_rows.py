"""GPU rows: training steps at the real Qwen-Audio-7B widths, timed on the device, MFU against the
device's dense bf16 peak (train/metrics.py table).

G1: stage 1 as configs/qwen_audio_7b_pretrain.py sets the model (LLM frozen and stored in bf16, encoder
    fp32 master weights, bf16 compute, its remat policy, attention "auto" = cuDNN flash attention),
    full depth (32 + 32 layers), batch of 8 examples × 1024 tokens with 30 s clips.
G2: a full fine-tune of an 8 + 8-layer model at 7B widths (every parameter trained, fp32 master weights,
    bf16 compute), batch of 4 × 1024 tokens with 30 s clips.
Steps are the trainer's jitted step (donated state); the time of a step is the wall time to
`block_until_ready` of its metrics (the device work dominates at these sizes), median of 5 after two
warm-up steps (the first compiles). On CPU these rows are skipped (`bench/run.py` lists why).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import jax

from bench import common, rows, train_setup
from qwen_audio_jax.model import config as model_config
from qwen_audio_jax.train import metrics, model_fns

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def config_model(name: str) -> model_config.ModelConfig:
  """The ModelConfig a run config (configs/<name>.py) trains."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(CONFIGS, name + ".py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return model_fns.resolve_model_config(module.get_config().model)


def stage1_model() -> model_config.ModelConfig:
  return config_model("qwen_audio_7b_pretrain")


def full_finetune_8x8() -> model_config.ModelConfig:
  base = config_model("qwen_audio_7b_sft")
  return base.replace(encoder=dataclasses.replace(base.encoder, n_layers=8),
                      decoder=dataclasses.replace(base.decoder, n_layers=8), param_dtype="float32",
                      encoder_param_dtype=None, decoder_param_dtype=None)


def device_step(cfg, stage: str, shapes: dict, repeats: int = 5) -> dict:
  """Times the train step of `cfg` on the default device; MFU against that device's peak."""
  step = train_setup.make_step(cfg, stage, **shapes)
  t = common.time_interleaved({"step": train_setup.run_fn(step)}, repeats, warmup=2)["step"]
  peak, how = metrics.peak_flops_per_device()
  device = jax.devices()[0]
  return {"device": device.device_kind, "step_s": t["median_s"], "step_min_s": t["min_s"],
          "step_tflop": step.flops / 1e12, "tflops": step.flops / t["median_s"] / 1e12, "peak_tflops": peak / 1e12,
          "peak_source": how, "mfu": step.flops / t["median_s"] / peak, "repeats": repeats, "shapes": shapes,
          "remat_policy": cfg.remat_policy, "attention": cfg.attention, "dtype": cfg.dtype}


def _row(name: str, cfg, stage: str, shapes: dict) -> dict:
  r = device_step(cfg, stage, shapes)
  return {"ours": f"{name}: {r['step_s']:.3f} s/step, {r['tflops']:.0f} TFLOP/s on {r['device']}",
          "reference": f"dense bf16 peak {r['peak_tflops']:.0f} TFLOP/s ({r['peak_source']})",
          "value": r["mfu"], "unit": "fraction", "met": None, "details": r,
          "notes": [f"{name}: batch {shapes['batch_size']} × {shapes['seq_len']} tokens + {shapes['mel_frames']} "
                    f"mel frames, remat {cfg.remat_policy!r}, attention {cfg.attention!r} (the log names the "
                    "implementation chosen)."]}


def stage1_row(quick: bool) -> dict:
  shapes = dict(batch_size=2 if quick else 8, seq_len=1024, mel_frames=3000)
  return _row("stage 1, 32+32 layers", stage1_model(), "stage1", shapes)


def full_finetune_row(quick: bool) -> dict:
  shapes = dict(batch_size=1 if quick else 4, seq_len=1024, mel_frames=3000)
  return _row("full fine-tune, 8+8 layers", full_finetune_8x8(), "full", shapes)


rows.register(rows.Row("G1", "stage-1 train step at 7B widths (device timing), MFU", "report", stage1_row,
                       backends=("gpu",)))
rows.register(rows.Row("G2", "8+8-layer full fine-tune at 7B widths (device timing), MFU", "report",
                       full_finetune_row, backends=("gpu",)))
