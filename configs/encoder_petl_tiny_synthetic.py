"""Adapting the audio encoder on the built-in synthetic set: PETL vs full fine-tuning vs a frozen encoder.

Start from a trained base run; the LLM stays frozen, the projector always trains, and the encoder is
  full     every encoder parameter trains
  frozen   nothing in the encoder trains (projector only)
  adapter  bottleneck adapters (model.encoder_petl: reduction 8, sequential, MHSA and FFN) — 4,384 params
  prompt   64 learned prompt tokens prepended to the encoder's block input — 4,096 params
  lora     LoRA rank 4 on the encoder's query/key/value/out projections — 4,096 params
The three PETL modes are sized to about the same trainable budget (tiny encoder: d=64, 2 blocks).

  python -m qwen_audio_jax.train --config=configs/encoder_petl_tiny_synthetic.py:60,adapter \\
      --config.train.init_params_dir=BASE_RUN --workdir=/tmp/petl-adapter
Arg: `steps,mode` (default `60,adapter`); adapter options: `--config.model.encoder_petl.adapter_kind=parallel`,
`...adapter_placement=ffn`, `...adapter_reduction=4`.
"""

from configs import tiny_synthetic

MODES = ("full", "frozen", "adapter", "prompt", "lora")
ENCODER_LORA_TARGETS = (r"audio_encoder/layers/attn/(query|key|value|out)",)


def get_config(arg=None):
  parts = (arg or "60,adapter").split(",")
  steps, mode = int(parts[0] or 60), (parts[1] if len(parts) > 1 else "adapter")
  if mode not in MODES or len(parts) > 2:
    raise ValueError(f"configs/encoder_petl_tiny_synthetic.py: arg {arg!r}; use STEPS,MODE with MODE in {MODES}")
  c = tiny_synthetic.get_config(str(steps))
  c.optim.warmup_steps = min(10, steps)
  c.train.freeze = (r".*",)  # everything frozen but the projector and the mode's parts
  trainable = [r"audio_projector/.*"]
  if mode == "full":
    trainable.append(r"audio_encoder/.*")
  elif mode == "adapter":
    c.model.encoder_petl = dict(adapter_reduction=8, adapter_kind="sequential", adapter_placement="both",
                                prompt_tokens=0)
    trainable.append(r"audio_encoder/layers/(attn|mlp)_adapter/.*")
  elif mode == "prompt":
    c.model.encoder_petl = dict(adapter_reduction=0, prompt_tokens=64)
    trainable.append(r"audio_encoder/prompts")
  elif mode == "lora":
    c.lora.enabled = True
    c.lora.rank = 4
    c.lora.alpha = 8.0
    c.lora.targets = ENCODER_LORA_TARGETS
  c.train.trainable = tuple(trainable)
  return c
