"""Qwen-7B / Qwen2 decoder (spec §3): embed, scanned pre-RMSNorm blocks, final_norm, untied lm_head.

Masks are causal + key padding with LEFT padding. Positions default to cumsum(attention_mask) - 1, so a
row's logits do not depend on how much padding it has. (Qwen v1 code uses padded positions 0..S-1 for
RoPE; RoPE is relative, so that is equivalent. Its logn scale, which is absolute, then depends on the
padding; here it uses the true positions.)

Dynamic NTK and logn (Qwen v1, inference only, spec §3.4): with `train=False` and cfg.dynamic_ntk, each
row gets alpha from its true (unpadded) length at prefill, base' = base * alpha^(Dh / (Dh - 2)); with
cfg.logn_attn, queries at positions p with p + 1 > seq_length are scaled by log(p + 1) / log(seq_length).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from qwen_audio_jax.model import rope
from qwen_audio_jax.model.attention import DecoderAttention
from qwen_audio_jax.model.config import ModelConfig
from qwen_audio_jax.model.kv_cache import KVCache
from qwen_audio_jax.model.layers import Linear, RMSNorm, constrain, embedding, remat, scan_layers

OUTPUTS = ("logits", "last_logits", "hidden")


class DecoderMlp(nn.Module):
  """down(up(x) * silu(gate(x))); gate = v1 `w2`, up = v1 `w1` (no biases)."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x):
    dcfg = self.cfg.decoder
    gate = Linear(dcfg.mlp_dim, ("embed", "mlp"), self.cfg, use_bias=False, name="gate")(x)
    up = Linear(dcfg.mlp_dim, ("embed", "mlp"), self.cfg, use_bias=False, name="up")(x)
    gate, up = checkpoint_name(gate, "mlpwi_0"), checkpoint_name(up, "mlpwi_1")
    down = Linear(dcfg.d_model, ("mlp", "embed"), self.cfg, use_bias=False, name="down")(up * jax.nn.silu(gate))
    return checkpoint_name(down, "mlpwo")


class DecoderLayer(nn.Module):
  """One pre-norm block, for nn.scan: returns (carry, None).

  Without a cache the carry is x [B, S, D] and `layer` is None. With one, the carry is (x, (k, v)) with the
  whole stacked cache [L, B, KVH, S_max, Dh] and `layer` is this layer's index (scanned): the layer writes
  its new keys/values into the carried cache in place, so a decode step moves one token per layer instead
  of re-stacking every layer's cache as scan outputs (which made XLA copy the cache each step).
  """

  cfg: ModelConfig

  @nn.compact
  def __call__(self, carry, cos, sin, q_scale, mask, cache_index, layer):
    eps = self.cfg.decoder.rms_eps
    x, kv = carry if layer is not None else (carry, None)
    x = constrain(x)
    attn, kv = DecoderAttention(self.cfg, name="attn")(
        RMSNorm(self.cfg, eps, name="ln_1")(x), cos, sin, q_scale, mask, cache_index,
        None if kv is None else (*kv, layer))
    x = x + attn
    x = constrain(x + DecoderMlp(self.cfg, name="mlp")(RMSNorm(self.cfg, eps, name="ln_2")(x)))
    return (x if layer is None else (x, kv)), None


class Decoder(nn.Module):
  """Token embedding + LLM. `embed_tokens(ids)` then `__call__(embeddings, ...)` (splicing goes between)."""

  cfg: ModelConfig

  def setup(self):
    dcfg = self.cfg.decoder
    self.embed = embedding(self.cfg, dcfg.padded_vocab, dcfg.d_model, ("vocab", "embed"))
    broadcast = (nn.broadcast,) * 5
    self.layers = scan_layers(remat(DecoderLayer, self.cfg.remat_policy), dcfg.n_layers,
                              in_axes=broadcast + (0,))(self.cfg)
    self.final_norm = RMSNorm(self.cfg, dcfg.rms_eps)
    self.lm_head = Linear(dcfg.padded_vocab, ("embed", "vocab"), self.cfg, use_bias=False, out_dtype=jnp.float32)

  def embed_tokens(self, input_ids: jax.Array) -> jax.Array:
    return self.embed(input_ids)

  def project(self, h: jax.Array) -> jax.Array:
    """Final-normed hidden states [..., D] -> fp32 logits [..., vocab_size] (the lm_head alone; padded
    vocabulary columns are sliced off, so no padded id can be sampled)."""
    return self.lm_head(h)[..., :self.cfg.decoder.vocab_size]

  def __call__(self, x: jax.Array, attention_mask: jax.Array, positions: jax.Array | None = None,
               cache: KVCache | None = None, train: bool = False,
               output: str = "logits") -> tuple[jax.Array, KVCache | None]:
    """x [B, S, D] embeddings, attention_mask [B, S] (1 = token, 0 = left padding).

    output: "logits" -> fp32 logits [B, S, V]; "last_logits" -> fp32 logits of the last column [B, V]
    (V = vocab_size: padded vocabulary columns are never returned)
    (generation: the lm_head runs on one position per row); "hidden" -> final-normed hidden states
    [B, S, D] for a caller that applies `project` only where it needs logits.
    Returns (that output, the updated cache or None without a cache).
    """
    if output not in OUTPUTS:
      raise ValueError(f"Decoder output must be one of {OUTPUTS}, got {output!r}")
    dcfg = self.cfg.decoder
    b, s, _ = x.shape
    mask = jnp.asarray(attention_mask).astype(jnp.int32)
    if cache is None:
      index = jnp.zeros((), jnp.int32)
      kv_mask, prev_pos = mask, jnp.zeros((b,), jnp.int32)
      kv = None
    else:
      index = cache.index
      kv_mask = jax.lax.dynamic_update_slice(cache.kv_mask, mask, (0, index))
      prev_pos = cache.next_pos
      kv = (cache.k, cache.v)
    if positions is None:
      positions = jnp.maximum(prev_pos[:, None] + jnp.cumsum(mask, axis=1) - 1, 0)
    positions = jnp.asarray(positions, jnp.int32)

    alpha = jnp.ones((b,), jnp.float32)
    if dcfg.dynamic_ntk and not train:
      alpha = rope.ntk_alpha(jnp.sum(kv_mask, axis=1), dcfg.seq_length)
      if cache is not None:  # alpha is fixed at prefill and reused by every later step
        alpha = jnp.where(index == 0, alpha, cache.ntk_alpha)
    cos, sin = rope.rope_tables(positions, rope.inv_frequencies(dcfg.head_dim, dcfg.rope_base, alpha))
    if dcfg.logn_attn and not train:
      q_scale = rope.logn_scale(positions, dcfg.seq_length)
    else:
      q_scale = jnp.ones((b, s), jnp.float32)

    if kv is None:  # attention is causal over the real keys (kv_mask)
      x, _ = self.layers(x, cos, sin, q_scale, kv_mask > 0, index, None)
    else:
      (x, kv), _ = self.layers((x, kv), cos, sin, q_scale, kv_mask > 0, index, jnp.arange(dcfg.n_layers))
    h = self.final_norm(x)
    if output == "hidden":
      out = h
    elif output == "last_logits":
      out = self.project(h[:, -1])
    else:
      logits = constrain(self.lm_head(h), ("activation_batch", "activation_length", "activation_vocab"))
      out = logits[..., :dcfg.vocab_size]  # padded columns sliced off
    new_cache = None
    if cache is not None:
      new_cache = KVCache(k=kv[0], v=kv[1], index=index + s, kv_mask=kv_mask,
                          next_pos=prev_pos + jnp.sum(mask, axis=1), ntk_alpha=alpha)
    return out, new_cache
