"""The base run config every `configs/*.py` starts from (ml_collections ConfigDict).

Blocks: model (preset + one field per model-config field), data (the data pipeline's config), mesh, distributed, train
(steps, batch, freezing, SpecAugment), optim, lora, checkpoint, eval, watchdog, log.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from qwen_audio_jax.data import config as data_config
from qwen_audio_jax.model import config as model_config


def _placeholders(cls) -> ml_collections.ConfigDict:
  """One unset (None) field per scalar field of a model-config dataclass, typed for the command line."""
  block = ml_collections.ConfigDict()
  for field in dataclasses.fields(cls):
    default = field.default if field.default is not dataclasses.MISSING else None
    if isinstance(default, (bool, int, float, str)) and field.name != "family":  # the preset fixes it
      block[field.name] = ml_collections.config_dict.placeholder(type(default))
    elif default is None and field.type == "str | None":  # e.g. the per-tower param dtypes
      block[field.name] = ml_collections.config_dict.placeholder(str)
  return block


# Vocabulary padding of the 7B run configs: rows a multiple of 1024 = 128 x tensor for tensor <= 8, so
# tensor parallelism splits embedding and lm_head (155,947 -> 156,672 rows for Qwen-Audio, +0.5%).
VOCAB_PAD_TO = 1024
SUB_BLOCKS = ("encoder", "decoder", "text_decoder")  # nested model-config dataclasses


def model_block(preset: str, **overrides) -> ml_collections.ConfigDict:
  """`preset` from model/config.py PRESETS plus one field per ModelConfig field (None = the preset's).

  Every field can be set on the command line, e.g. `--config.model.preset=tiny-qwen-audio
  --config.model.dtype=float32 --config.model.decoder.n_layers=4`. `overrides` fill the same fields
  (dicts for encoder/decoder), e.g. `model_block("qwen-audio-7b", dtype="bfloat16")`.
  """
  block = _placeholders(model_config.ModelConfig)
  block.preset = preset
  block.encoder = _placeholders(model_config.EncoderConfig)
  block.decoder = _placeholders(model_config.DecoderConfig)
  block.text_decoder = _placeholders(model_config.WhisperDecoderConfig)
  for key, value in overrides.items():
    if key in SUB_BLOCKS:
      for sub_key, sub_value in dict(value or {}).items():
        if sub_key not in block[key]:
          raise KeyError(f"model_block: {key}.{sub_key} is not a {key} config field")
        block[key][sub_key] = sub_value
    elif key not in block:
      raise KeyError(f"model_block: {key} is not a model config field")
    else:
      block[key] = value
  return block


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
  c.distributed.heartbeat_timeout_s = 60  # a dead process is reported (and the others exit) after this

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
  c.train.init_params_dir = ""  # start from: a converted checkpoint, or a run's WORKDIR[@best|latest|N]
  c.train.fork_from = ""  # start a NEW run (new --workdir) from another run's weights: WORKDIR[@best|latest|N]
  c.train.allow_random_init = False  # LoRA / frozen-part configs refuse to start from random weights
  c.train.compilation_cache_dir = ""  # persistent XLA compilation cache ("" = off)
  c.train.stop_after_steps = 0  # >0: stop (with a checkpoint) after this many steps of this run
  c.train.nonfinite_policy = "skip"  # NaN/Inf loss or gradient: the update is never applied; skip | halt
  c.train.max_nonfinite_in_a_row = 10  # "skip": stop the run after this many skipped steps in a row (0: never)

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
  c.lora.targets = (r"decoder/layers/attn/(q|k|v|qkv|o)", r"decoder/layers/mlp/(gate|up|down)")
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
  c.eval.split = "validation"  # held-out split of the built-in synthetic set (other data: data.eval_*)
  c.eval.sweep = ""  # also decode + score this sweep config (configs/eval/*.py[:arg]) at every evaluation
  c.eval.sweep_limit = 0  # samples per sweep dataset (0: the sweep's own limit)
  c.eval.text_samples = 3  # generated answers per dataset shown in TensorBoard (text; the clips as audio)
  c.eval.best_metric = "eval_loss"  # best/ keeps: eval_loss | generate/<dataset>/<metric> | generate/mean_score
  c.eval.best_mode = "min"  # min | max

  c.watchdog = ml_collections.ConfigDict()  # per-host hang watchdog (train/watchdog.py)
  c.watchdog.enabled = True
  c.watchdog.factor = 10.0  # fire when no step completes for factor x the median step time ...
  c.watchdog.min_timeout_s = 300.0  # ... but never sooner than this
  c.watchdog.ceiling_s = 3600.0  # always fire after this (also during eval/checkpoint saves); 0: no ceiling
  c.watchdog.warmup_steps = 3  # first steps of a run left out of the median (compiles are never timed)

  c.log = ml_collections.ConfigDict()
  c.log.every_steps = 10
  c.log.tensorboard = True
  c.log.plot = True
  c.log.peak_tflops = 0.0  # per-device peak for MFU; 0: from the device table (CPU: measured)
  return c
