"""The base run config every `configs/*.py` starts from (ml_collections ConfigDict).

Blocks: model (preset + overrides), data (the data pipeline's config), mesh, distributed, train
(steps, batch, freezing, SpecAugment), optim, lora, checkpoint, eval, log.
"""

from __future__ import annotations

import ml_collections

from qwen_audio_jax.data import config as data_config


def model_block(preset: str, **overrides) -> ml_collections.ConfigDict:
  """`preset` from model/config.py PRESETS; `overrides` replace fields (dicts for encoder/decoder)."""
  return ml_collections.ConfigDict({"preset": preset, "overrides": overrides})


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = model_block("tiny-qwen-audio")
  c.data = data_config.default_config()

  c.mesh = ml_collections.ConfigDict()
  c.mesh.ici = (1, -1, 1)  # (data, fsdp, tensor) inside a slice; one -1 takes the remaining devices
  c.mesh.dcn = (1, 1, 1)  # across slices (TPU multislice) or, without slices, across processes
  c.mesh.min_sharded_bytes = 1 << 20  # with fsdp/tensor > 1: fail if a param this large is replicated

  c.distributed = ml_collections.ConfigDict()
  c.distributed.mode = "auto"  # auto | on | off (jax.distributed.initialize)
  c.distributed.coordinator = ""  # "host:port" off Cloud TPU (else JAX_COORDINATOR_ADDRESS)
  c.distributed.num_processes = -1  # -1: from the environment / auto-detection
  c.distributed.process_id = -1
  c.distributed.cpu_devices = 0  # >0: simulate this many CPU devices per process (testing)
  c.distributed.timeout_s = 300

  c.train = ml_collections.ConfigDict()
  c.train.total_steps = 1000
  c.train.batch_size = 8  # global examples per optimizer step
  c.train.grad_accum_steps = 1  # micro-batches per step (batch_size must be divisible)
  c.train.seed = 0  # parameter init + per-step RNG
  c.train.data_seed = 0  # data order
  c.train.freeze = ()  # regexes over '/'-joined param paths (full match), e.g. "decoder/.*"
  c.train.trainable = ()  # exceptions to `freeze`
  c.train.mel_frames = 0  # >0: crop the 3000-frame mel window (clips must fit; checked); 0: full
  c.train.specaugment = ml_collections.ConfigDict(dict(
      enabled=True, freq_masks=2, freq_width=27, time_masks=2, time_width=100, time_ratio=0.05))
  c.train.init_params_dir = ""  # Orbax params checkpoint to start from (fresh random init if empty)
  c.train.compilation_cache_dir = ""  # persistent XLA compilation cache ("" = off)
  c.train.stop_after_steps = 0  # >0: stop (with a checkpoint) after this many steps of this run

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 1e-4
  c.optim.warmup_steps = 100
  c.optim.final_lr_fraction = 0.1
  c.optim.b1 = 0.9
  c.optim.b2 = 0.95
  c.optim.eps = 1e-8
  c.optim.weight_decay = 0.1
  c.optim.clip_norm = 1.0
  c.optim.decay_pattern = r".*/(kernel|embedding|lora_a|lora_b)"

  c.lora = ml_collections.ConfigDict()
  c.lora.enabled = False
  c.lora.rank = 8
  c.lora.alpha = 16.0
  c.lora.targets = (r"decoder/layers/attn/(q|k|v|o)", r"decoder/layers/mlp/(gate|up|down)")
  c.lora.export_naming = "qwen-audio"  # qwen-audio (v1 hub names) | qwen2-audio (HF hub names)

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 500
  c.checkpoint.keep = 3
  c.checkpoint.best_keep = 2
  c.checkpoint.async_save = True

  c.eval = ml_collections.ConfigDict()
  c.eval.every_steps = 500  # 0: never
  c.eval.batches = 4
  c.eval.batch_size = 8
  c.eval.split = "validation"  # split of every data source used for the held-out loss
  c.eval.sweep = ""  # also decode + score this sweep config (configs/eval/*.py[:arg]) at every evaluation
  c.eval.sweep_limit = 0  # samples per sweep dataset (0: the sweep's own limit)
  c.eval.text_samples = 3  # generated answers per dataset shown in TensorBoard (text; the clips as audio)
  c.eval.best_metric = "eval_loss"  # best/ keeps: eval_loss | generate/<dataset>/<metric> | generate/mean_score
  c.eval.best_mode = "min"  # min | max

  c.log = ml_collections.ConfigDict()
  c.log.every_steps = 10
  c.log.tensorboard = True
  c.log.plot = True
  c.log.peak_tflops = 0.0  # per-device peak for MFU; 0: from the device table (CPU: measured)
  return c
