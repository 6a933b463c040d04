"""Qwen-Audio(-Chat) LoRA fine-tuning: all base weights frozen and stored in bf16 (no fp32 copy, no per-step
cast); rank-8 adapters (fp32) on the LLM's attention and MLP projections. At the end the adapters are exported as an HF-PEFT adapter
(WORKDIR/lora_adapter: adapter_model.safetensors + adapter_config.json, Qwen-Audio hub names); the
merged model: `python -m qwen_audio_jax.export_run --workdir=WORKDIR --output=DIR`.
Arg: `:qwen2` switches to Qwen2-Audio-7B (transformers module names `model.language_model.layers.N...`,
natural-language prompts). Data from the command line (there is no default data set):

  python -m qwen_audio_jax.train --config=configs/qwen_audio_7b_lora.py --workdir=runs/lora \
      --config.train.init_params_dir=ckpt/qwen-audio \
      --config.data.train_manifest=train.jsonl --config.data.eval_manifest=dev.jsonl
"""

from qwen_audio_jax.train import defaults


def get_config(arg=None):
  c = defaults.base_config()
  if arg == "qwen2":
    c.model = defaults.model_block("qwen2-audio-7b", dtype="bfloat16", param_dtype="bfloat16", remat_policy="full",
                                   decoder=dict(vocab_pad_to=defaults.VOCAB_PAD_TO))
    c.data.family, c.data.n_mels, c.lora.export_naming = "qwen2-audio", 128, "qwen2-audio"
  else:
    c.model = defaults.model_block("qwen-audio-7b", dtype="bfloat16", param_dtype="bfloat16", remat_policy="full",
                                   decoder=dict(vocab_pad_to=defaults.VOCAB_PAD_TO))
  c.lora.enabled = True
  c.lora.rank = 8
  c.lora.alpha = 16.0
  c.lora.targets = (r"decoder/layers/attn/(q|k|v|qkv|o)", r"decoder/layers/mlp/(gate|up|down)")
  c.train.freeze = (r".*",)  # base weights frozen; adapters always train
  c.train.total_steps = 4000
  c.train.batch_size = 64
  c.optim.lr = 1e-4
  c.optim.warmup_steps = 100
  c.optim.weight_decay = 0.0
  c.mesh.ici = (1, -1, 1)
  c.mesh.dcn = (-1, 1, 1)
  c.data.seq_buckets = (1024, 2048)
  c.checkpoint.every_steps = 500
  c.eval.every_steps = 500
  c.data.sources = []  # no default data: set data.train_manifest / data.corpus (see above)
  return c
