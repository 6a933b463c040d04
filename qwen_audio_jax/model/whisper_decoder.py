"""Whisper's text decoder (openai `TextDecoder` / transformers `WhisperDecoder`) as a Flax module.

token embedding + learned positions -> scanned pre-LN blocks (causal self-attention, cross-attention over
the encoder output, GELU MLP) -> ln -> logits = h @ embedding^T (the output projection is tied), in fp32.
Attention projections: query/value/out with bias, key without (as in the encoder).

The module is cache-agnostic: it takes and returns per-layer arrays; `whisper_decode.py` wraps them in
`WhisperCache`. Cross-attention keys/values are kept once per clip: `enc` / `cross_kv` have N rows and the
B token rows are grouped by clip (rows r*G .. r*G + G - 1 belong to clip r, G = B / N), so beams of one
clip read one copy of its 1500-frame keys/values.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from qwen_audio_jax.model.attention import MASKED, dot_product_attention
from qwen_audio_jax.model.config import ModelConfig
from qwen_audio_jax.model.layers import (DEFAULT_INIT, GeluMlp, LayerNorm, Linear, compute_dtype, constrain,
                                         embedding, matmul_precision, param_dtype, partitioned, remat, scan_layers)

OUTPUTS = ("logits", "last_logits")


def cached_attention(q, k_new, v_new, cache, index, scale: float, precision=None):
  """Causal attention of the new tokens over the cached slots [0, index) and themselves, reading the cache
  without writing it (the caller stores k_new/v_new at `index` once, in place).

  q, k_new, v_new [B, S, H, Dh]; cache (k, v) [B, S_max, H, Dh] or None (nothing cached). Scores in fp32,
  one softmax over both blocks, normalised after the value product (as `dot_product_attention`, so that
  bf16 results do not depend on the batch size). Returns [B, S, H, Dh] in v's dtype.
  """
  s = q.shape[1]
  logits = lambda k: jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=precision,
                                preferred_element_type=jnp.float32) * scale
  causal = (jnp.arange(s)[None, :] <= jnp.arange(s)[:, None])[None, None]  # [1, 1, S, S]
  blocks = [(jnp.where(causal, logits(k_new), MASKED), v_new)]
  if cache is not None:
    slots = (jnp.arange(cache[0].shape[1]) < index)[None, None, None]
    blocks.insert(0, (jnp.where(slots, logits(cache[0]), MASKED), cache[1]))
  top = functools.reduce(jnp.maximum, [jnp.max(sc, axis=-1, keepdims=True) for sc, _ in blocks])
  weights = [jnp.exp(sc - top) for sc, _ in blocks]
  total = sum(jnp.sum(w, axis=-1) for w in weights)  # [B, H, S]
  out = sum(jnp.einsum("bhqk,bkhd->bqhd", w.astype(v.dtype), v, precision=precision,
                       preferred_element_type=jnp.float32) for w, (_, v) in zip(weights, blocks))
  return (out / jnp.transpose(total, (0, 2, 1))[..., None]).astype(v_new.dtype)


class TextAttention(nn.Module):
  """Self-attention (`cross=False`) or cross-attention (`cross=True`) of one decoder block.

  Self: causal over `layer_kv` (k, v) [B, S_max, H, Dh] slots [0, index) (None: nothing cached) and the new
  tokens. Cross: keys/values are projections of `enc` [N, T, D], or the cached `layer_kv` [N, T, H, Dh]
  when `enc` is None; no mask (Whisper attends to the whole 30 s window). Returns (output [B, S, D],
  self: this call's keys/values [B, S, H, Dh]; cross: the keys/values used).
  """

  cfg: ModelConfig
  cross: bool

  @nn.compact
  def __call__(self, x, enc=None, index=None, layer_kv=None):
    tcfg = self.cfg.text_decoder
    b, s, d = x.shape
    split = lambda y: y.reshape(y.shape[0], y.shape[1], tcfg.n_heads, tcfg.head_dim)
    dtype, precision, scale = compute_dtype(self.cfg), matmul_precision(self.cfg), tcfg.head_dim**-0.5
    q = split(Linear(d, ("embed", "heads"), self.cfg, name="query")(x))
    if self.cross and enc is None:
      k, v = layer_kv
    else:
      src = enc if self.cross else x
      k = split(Linear(d, ("embed", "heads"), self.cfg, use_bias=False, name="key")(src))
      v = split(Linear(d, ("embed", "heads"), self.cfg, name="value")(src))
    if self.cross:  # rows grouped by clip: [B, S] queries -> [N, G * S] against the clip's keys
      n = k.shape[0]
      out = dot_product_attention(q.reshape(n, (b // n) * s, tcfg.n_heads, tcfg.head_dim), k.astype(dtype),
                                  v.astype(dtype), None, scale, precision)
    else:
      cache = None if layer_kv is None else (layer_kv[0].astype(dtype), layer_kv[1].astype(dtype))
      out = cached_attention(q, k, v, cache, index, scale, precision)
    out = Linear(d, ("heads", "embed"), self.cfg, name="out")(out.reshape(b, s, d))
    return out, (k, v)


class TextDecoderLayer(nn.Module):
  """x + SelfAttn(LN(x)); x + CrossAttn(LN(x)); x + MLP(LN(x)). Returns (x, (self kv, cross kv)) for nn.scan:
  with `keep_kv`, this call's self keys/values [B, S, H, Dh] and the cross keys/values computed from `enc`;
  else None, so nothing is stacked."""

  cfg: ModelConfig
  keep_kv: bool = False

  @nn.compact
  def __call__(self, x, enc, index, self_kv, cross_kv):
    tcfg = self.cfg.text_decoder
    ln = lambda name: LayerNorm(self.cfg, tcfg.ln_eps, name=name)
    x = constrain(x)
    h, new_self = TextAttention(self.cfg, cross=False, name="attn")(ln("attn_ln")(x), index=index, layer_kv=self_kv)
    x = x + h
    h, new_cross = TextAttention(self.cfg, cross=True, name="cross_attn")(ln("cross_attn_ln")(x), enc=enc,
                                                                          layer_kv=cross_kv)
    x = x + h
    x = x + GeluMlp(self.cfg, tcfg.mlp_dim, name="mlp")(ln("mlp_ln")(x))
    if not self.keep_kv:
      return constrain(x), (None, None)
    return constrain(x), (new_self, new_cross if enc is not None else None)


class WhisperDecoder(nn.Module):
  """ids [B, S] -> fp32 logits, given the encoder output or cached cross keys/values.

  Call with (ids, enc [N, T, D]) for teacher forcing. For cached decoding pass `index` (tokens already
  cached = position of ids[:, 0]), `self_kv` = (k, v) [L, B, S_max, H, Dh] holding slots [0, index) (None
  when nothing is cached), `cross_kv` = (k, v) [L, N, T, H, Dh] instead of `enc` after the first call, and
  `keep_kv=True`: the call then also returns its own keys/values [L, B, S, H, Dh] (for the caller to store
  at `index`) and the cross keys/values computed from `enc` (None when given). The caches are only read,
  so a step costs one pass over them, not a rewrite. Returns (logits [B, S, V], or [B, V] for
  output="last_logits"; new self kv or None; cross kv or None).
  """

  cfg: ModelConfig

  @nn.compact
  def __call__(self, ids, enc=None, self_kv=None, cross_kv=None, index=None, keep_kv: bool = False,
               output: str = "logits"):
    if output not in OUTPUTS:
      raise ValueError(f"WhisperDecoder output must be one of {OUTPUTS}, got {output!r}")
    if (enc is None) == (cross_kv is None):
      raise ValueError("WhisperDecoder: pass exactly one of enc (encoder output) and cross_kv (cached)")
    tcfg = self.cfg.text_decoder
    dtype = compute_dtype(self.cfg)
    b, s = ids.shape
    embed = embedding(self.cfg, tcfg.vocab_size, tcfg.d_model, ("vocab", "embed"), name="embed")
    positions = self.param("embed_positions", partitioned(DEFAULT_INIT, ("positions", "embed")),
                           (tcfg.n_ctx, tcfg.d_model), param_dtype(self.cfg))
    index = jnp.zeros((), jnp.int32) if index is None else jnp.asarray(index, jnp.int32)
    x = embed(ids) + jax.lax.dynamic_slice_in_dim(positions, index, s).astype(dtype)[None]
    layers = scan_layers(remat(TextDecoderLayer, self.cfg.remat_policy), tcfg.n_layers,
                         in_axes=(nn.broadcast, nn.broadcast, 0, 0))
    x, (new_self, new_cross) = layers(self.cfg, keep_kv, name="layers")(x, enc, index, self_kv, cross_kv)
    h = LayerNorm(self.cfg, tcfg.ln_eps, name="ln")(x)
    if output == "last_logits":
      h = h[:, -1]
    logits = jnp.einsum("...d,vd->...v", h.astype(dtype), embed.embedding.astype(dtype),
                        precision=matmul_precision(self.cfg), preferred_element_type=jnp.float32)
    if output == "logits":
      logits = constrain(logits, ("activation_batch", "activation_length", "activation_vocab"))
    return logits, new_self, new_cross
