"""Attention: the shared dot-product core, the Whisper encoder attention and the Qwen decoder attention.

Scores are accumulated in float32, masked with a large finite negative (a fully masked row gives a
uniform softmax instead of NaN) and normalised in float32 after the value product; grouped KV heads
are supported.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from qwen_audio_jax.model import rope
from qwen_audio_jax.model.config import ModelConfig
from qwen_audio_jax.model.layers import Linear, compute_dtype, matmul_precision

MASKED = float(jnp.finfo(jnp.float32).min)


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, scale: float,
                          precision=None) -> jax.Array:
  """softmax(scale * q k^T + mask) v.

  q [B, Sq, H, Dh]; k, v [B, Sk, KVH, Dh] with H % KVH == 0; mask bool, broadcastable to [B, Sq, Sk]
  (True = may attend). Returns [B, Sq, H, Dh] in v's dtype.
  """
  b, sq, h, dh = q.shape
  kvh = k.shape[2]
  q = q.reshape(b, sq, kvh, h // kvh, dh)
  scores = jnp.einsum("bqkgd,bskd->bkgqs", q, k, precision=precision, preferred_element_type=jnp.float32)
  scores = scores * scale
  if mask is not None:
    scores = jnp.where(mask[:, None, None, :, :], scores, MASKED)
  # Softmax with the normalisation after the value product (in float32), as flash attention does: with
  # normalised probabilities XLA may move the division across the product depending on the shapes,
  # which made bf16 outputs depend on the batch size.
  weights = jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True))
  total = jnp.sum(weights, axis=-1)  # [b, kvh, g, q]
  out = jnp.einsum("bkgqs,bskd->bqkgd", weights.astype(v.dtype), v, precision=precision,
                   preferred_element_type=jnp.float32)
  out = out / jnp.transpose(total, (0, 3, 1, 2))[..., None]
  return out.astype(v.dtype).reshape(b, sq, h, dh)


class EncoderAttention(nn.Module):
  """Whisper self-attention: query/value/out with bias, key without bias, scale 1/sqrt(head_dim)."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x: jax.Array, key_mask: jax.Array | None) -> jax.Array:
    ecfg = self.cfg.encoder
    b, t, d = x.shape
    heads = lambda y: y.reshape(b, t, ecfg.n_heads, ecfg.head_dim)
    q = heads(Linear(d, ("embed", "heads"), self.cfg, name="query")(x))
    k = heads(Linear(d, ("embed", "heads"), self.cfg, use_bias=False, name="key")(x))
    v = heads(Linear(d, ("embed", "heads"), self.cfg, name="value")(x))
    out = dot_product_attention(q, k, v, key_mask, ecfg.head_dim**-0.5, matmul_precision(self.cfg))
    return Linear(d, ("heads", "embed"), self.cfg, name="out")(out.reshape(b, t, d))


class DecoderAttention(nn.Module):
  """Qwen attention: q/k/v (bias), RoPE, optional logn query scale, grouped KV heads, o (no bias).

  With `layer_kv` = (k_cache, v_cache) [B, S_max, KVH, Dh], the new keys/values are written at slot
  `cache_index` and attention runs over all S_max slots (the mask hides unwritten/padded ones).
  """

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, cos, sin, q_scale, mask, cache_index, layer_kv):
    dcfg = self.cfg.decoder
    b, s, _ = x.shape
    dh = dcfg.head_dim
    q = Linear(dcfg.n_heads * dh, ("embed", "heads"), self.cfg, use_bias=dcfg.qkv_bias, name="q")(x)
    k = Linear(dcfg.n_kv_heads * dh, ("embed", "kv_heads"), self.cfg, use_bias=dcfg.qkv_bias, name="k")(x)
    v = Linear(dcfg.n_kv_heads * dh, ("embed", "kv_heads"), self.cfg, use_bias=dcfg.qkv_bias, name="v")(x)
    q = rope.apply_rope(q.reshape(b, s, dcfg.n_heads, dh), cos, sin)
    k = rope.apply_rope(k.reshape(b, s, dcfg.n_kv_heads, dh), cos, sin)
    v = v.reshape(b, s, dcfg.n_kv_heads, dh)
    q = (q.astype(jnp.float32) * q_scale[:, :, None, None]).astype(q.dtype)
    new_kv = None
    if layer_kv is not None:
      k_cache, v_cache = layer_kv
      start = (0, cache_index, 0, 0)
      k = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), start)
      v = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), start)
      new_kv = (k, v)
    dtype = compute_dtype(self.cfg)
    out = dot_product_attention(q, k.astype(dtype), v.astype(dtype), mask, dh**-0.5, matmul_precision(self.cfg))
    out = Linear(dcfg.d_model, ("heads", "embed"), self.cfg, use_bias=False, name="o")(
        out.reshape(b, s, dcfg.n_heads * dh))
    return out, new_kv
