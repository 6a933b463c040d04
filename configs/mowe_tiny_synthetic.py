"""MoWE-Audio on the built-in synthetic set: `tiny_synthetic.py` plus a diverse pool of two weak encoders.

  python -m qwen_audio_jax.train --config=configs/mowe_tiny_synthetic.py --workdir=/tmp/mowe
Arg: `steps[,paper][,lora]` (default 150). `paper`: the paper's setting — base encoder and LLM frozen, only
the weak encoders, routers and projector train; start it from a trained base run (its parameters are taken,
the MoWE parts start fresh): `configs/mowe_tiny_synthetic.py:100,paper --config.train.init_params_dir=RUN_DIR`.
`lora` (with `paper`): the LLM gets rank-8 LoRA adapters on its attention and MLP projections instead of
staying fully frozen (the paper's other setting). Without `paper` everything trains from scratch, like
tiny_synthetic.py (compare at equal steps).
"""

import dataclasses

from qwen_audio_jax.model import config as model_config

from configs import tiny_synthetic

# Weak encoders: the base encoder's code at smaller widths (time-aligned: same n_mels, n_ctx, padding).
_BASE = model_config.PRESETS["tiny-qwen-audio"].encoder
WEAK_POOL = (dataclasses.replace(_BASE, d_model=32, n_heads=2, n_layers=1, mlp_dim=128),
             dataclasses.replace(_BASE, d_model=48, n_heads=3, n_layers=1, mlp_dim=192))
PAPER_FREEZE = (r"audio_encoder/.*", r"decoder/.*", r"audio_bos_eos/.*")


def mowe_block(pool=WEAK_POOL, top_k: int = 1, routers: str = "both", aux_weight: float = 0.1) -> dict:
  """The `model.mowe` block (plain dict: the run config stores it as is)."""
  return dict(weak=[dataclasses.asdict(w) for w in pool], top_k=top_k, routers=routers, aux_weight=aux_weight)


def get_config(arg=None):
  parts = (arg or "").split(",")
  steps = int(parts[0]) if parts[0] else 150
  c = tiny_synthetic.get_config(str(steps))
  c.model.mowe = mowe_block()
  options = parts[1:]
  unknown = [p for p in options if p not in ("paper", "lora")]
  if unknown or ("lora" in options and "paper" not in options):
    raise ValueError(f"configs/mowe_tiny_synthetic.py: arg {arg!r}; use STEPS[,paper[,lora]]")
  if "paper" in options:
    c.train.freeze = PAPER_FREEZE
  if "lora" in options:
    c.lora.enabled = True  # defaults: rank 8, alpha 16, the LLM's attention and MLP projections
  return c
