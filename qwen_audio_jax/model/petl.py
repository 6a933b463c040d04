"""Parameter-efficient transfer of the audio encoder (Cappellazzo et al., PETL of Audio Spectrogram Transformers).

* Bottleneck adapters: A(u) = up(GELU(down(u))), down [d, d/r] and up [d/r, d] with biases; `up` starts at
  zero, so a fresh adapter adds exactly 0 and the encoder is unchanged bit for bit. Placement per encoder
  block: after the self-attention sub-layer ("mhsa"), the MLP sub-layer ("ffn") or both. "sequential"
  (Houlsby): h = f(LN x); h = h + A(h); x = x + h. "parallel" (He et al. / Pfeiffer-parallel):
  x = x + f(LN x) + A(LN x). Parameters per adapter: 2·d·(d/r) + d/r + d.
* Prompt tuning: n learned tokens [n, d] are prepended to the block input (after the positional table;
  they get no position), are attended to by every frame (never masked), and are dropped after the last
  block, so the pooled frame count — and the audio-token arithmetic of audio/lengths.py, model/splice.py
  and the placeholder check — is unchanged.
* LoRA on the encoder's projections is the LLM's LoRA (train/lora.py) with targets such as
  `audio_encoder/layers/attn/(query|key|value|out)`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from qwen_audio_jax.model.config import EncoderPetlConfig, ModelConfig
from qwen_audio_jax.model.layers import DEFAULT_INIT, Linear, partitioned, param_dtype

PLACEMENTS = {"mhsa": ("attn",), "ffn": ("mlp",), "both": ("attn", "mlp")}


def adapter_width(d_model: int, petl: EncoderPetlConfig) -> int:
  if petl.adapter_reduction < 1 or d_model % petl.adapter_reduction:
    raise ValueError(f"ModelConfig.encoder_petl.adapter_reduction={petl.adapter_reduction} must be >= 1 and "
                     f"divide the encoder width {d_model}")
  return d_model // petl.adapter_reduction


def adapted_sublayers(cfg: ModelConfig) -> tuple[str, ...]:
  """Which sub-layers ("attn", "mlp") of each encoder block carry an adapter (none without PETL)."""
  petl = cfg.encoder_petl
  if petl is None or not petl.adapter_reduction:
    return ()
  if petl.adapter_placement not in PLACEMENTS:
    raise ValueError(f"ModelConfig.encoder_petl.adapter_placement must be one of {sorted(PLACEMENTS)}, "
                     f"got {petl.adapter_placement!r}")
  if petl.adapter_kind not in ("sequential", "parallel"):
    raise ValueError(f"ModelConfig.encoder_petl.adapter_kind must be 'sequential' or 'parallel', "
                     f"got {petl.adapter_kind!r}")
  return PLACEMENTS[petl.adapter_placement]


def adapter_param_count(d_model: int, petl: EncoderPetlConfig, n_layers: int) -> int:
  """The formula: per adapter 2·d·m + m + d (m = d / r), times adapted sub-layers and blocks."""
  m = adapter_width(d_model, petl)
  return n_layers * len(PLACEMENTS[petl.adapter_placement]) * (2 * d_model * m + m + d_model)


class Adapter(nn.Module):
  """u [..., d] -> up(GELU(down(u))) [..., d]; `up` zero-initialised (identity residual when fresh)."""

  cfg: ModelConfig
  width: int

  @nn.compact
  def __call__(self, u: jax.Array) -> jax.Array:
    h = Linear(self.width, ("embed", "norm"), self.cfg, name="down")(u)
    h = jax.nn.gelu(h, approximate=False)
    return Linear(u.shape[-1], ("norm", "embed"), self.cfg, kernel_init=nn.initializers.zeros_init(), name="up")(h)


def adapters(cfg: ModelConfig) -> dict[str, "Adapter"]:
  """{sub-layer name: Adapter} for the calling encoder block (call inside its compact method)."""
  subs = adapted_sublayers(cfg)
  width = adapter_width(cfg.encoder.d_model, cfg.encoder_petl) if subs else 0
  return {s: Adapter(cfg, width, name=f"{s}_adapter") for s in subs}


def adapt(cfg: ModelConfig, h: jax.Array, ln_x: jax.Array, adapter: "Adapter | None") -> jax.Array:
  """The sub-layer output h = f(ln_x) with its adapter applied (what is added to the residual stream)."""
  if adapter is None:
    return h
  return h + adapter(h if cfg.encoder_petl.adapter_kind == "sequential" else ln_x)


def prompt_tokens(cfg: ModelConfig) -> int:
  petl = cfg.encoder_petl
  return 0 if petl is None else int(petl.prompt_tokens)


def prepend_prompts(module: nn.Module, cfg: ModelConfig, x: jax.Array, lengths: jax.Array | None):
  """x [N, T, d] -> [N, n + T, d] with the learned prompts first; key lengths [N] -> lengths + n (the
  prompts are always visible; a clip's padded frames stay hidden)."""
  n = prompt_tokens(cfg)
  if n <= 0:
    return x, lengths
  prompts = module.param("prompts", partitioned(DEFAULT_INIT, ("norm", "embed")), (n, cfg.encoder.d_model),
                         param_dtype(cfg))
  x = jnp.concatenate([jnp.broadcast_to(prompts.astype(x.dtype)[None], (x.shape[0], n, x.shape[-1])), x], axis=1)
  return x, None if lengths is None else lengths + n
  prompts = module.param("prompts", partitioned(DEFAULT_INIT, ("norm", "embed")), (n, cfg.encoder.d_model),
                         param_dtype(cfg))
  x = jnp.concatenate([jnp.broadcast_to(prompts.astype(x.dtype)[None], (x.shape[0], n, x.shape[-1])), x], axis=1)
  if key_mask is not None:
    key_mask = jnp.concatenate([jnp.ones(key_mask.shape[:2] + (n,), bool), key_mask], axis=-1)
  return x, key_mask
