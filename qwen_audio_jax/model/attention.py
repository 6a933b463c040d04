"""Attention: one entry point (`attention`) with implementations chosen by backend and config, the
Whisper encoder attention and the Qwen decoder attention.

`ModelConfig.attention` selects the implementation:
* "xla": the reference below; materialises the fp32 [Sq, Sk] scores (fine for short sequences/decode).
* "chunked": blockwise online softmax (`attention_chunked.py`), query and key blocks of about
  `cfg.attention_chunk`; never holds the [Sq, Sk] scores, custom backward. The fastest on CPU.
* "cudnn": cuDNN flash attention via `jax.nn.dot_product_attention` (GPU, bf16/fp16 only).
* "splash": Pallas splash attention (TPU; self-attention without a KV cache).
* "auto": cudnn on GPU (bf16/fp16; xla for a decode step's single query, which reads the heads-major KV
  cache without a transpose), splash on TPU, chunked on CPU when the [Sq, Sk] scores exceed one
  [chunk, chunk] block (so not for a decode step's single query), else xla.
A chosen implementation that cannot run a case (cudnn off GPU or in fp32, splash off TPU or with a KV
cache, a kernel's own refusal) falls back to chunked (CPU) or xla (GPU/TPU); the choice and any
fallback reason are logged once each.

All implementations take the same `KeyMask` (which keys each query may see), scores and softmax in
float32, grouped KV heads. A masked score is the finite float32 minimum, so in "xla" and "chunked" a
row with no visible key averages all values instead of giving NaN; other kernels give other finite
values in such (padding) rows.
"""

from __future__ import annotations

import dataclasses
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from qwen_audio_jax.model import attention_fused, rope
from qwen_audio_jax.model.attention_chunked import MASKED, chunked_attention
from qwen_audio_jax.model.config import ModelConfig
from qwen_audio_jax.model.layers import Linear, compute_dtype, matmul_precision

IMPLEMENTATIONS = ("auto", "xla", "chunked", "cudnn", "splash")
_logger = logging.getLogger(__name__)
_logged: set[tuple[str, ...]] = set()


@dataclasses.dataclass(frozen=True)
class KeyMask:
  """Which keys a query may see: key j is visible if valid[b, j] (or j < lengths[b]) and, when
  `causal`, j <= offset + i for query i (offset = the KV-cache write slot; None = 0, no cache)."""

  valid: jax.Array | None = None  # [B, Sk] bool
  lengths: jax.Array | None = None  # [B] int: keys [0, lengths) valid (right padding)
  causal: bool = False
  offset: jax.Array | None = None  # int32 scalar

  def key_valid(self, sk: int) -> jax.Array | None:
    if self.lengths is not None:
      return jnp.arange(sk)[None, :] < jnp.asarray(self.lengths)[:, None]
    return None if self.valid is None else jnp.asarray(self.valid, bool)

  def dense(self, sq: int, sk: int) -> jax.Array | None:
    """Boolean mask broadcastable to [B, Sq, Sk] (None: everything visible)."""
    out = self.key_valid(sk)
    out = None if out is None else out[:, None, :]
    if self.causal:
      start = 0 if self.offset is None else self.offset
      allowed = (jnp.arange(sk)[None, :] <= start + jnp.arange(sq)[:, None])[None]
      out = allowed if out is None else out & allowed
    return out


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, scale: float,
                          precision=None, kv_heads_major: bool = False) -> jax.Array:
  """The reference ("xla"): softmax(scale * q k^T + mask) v with the full fp32 score matrix.

  q [B, Sq, H, Dh]; k, v [B, Sk, KVH, Dh] with H % KVH == 0 ([B, KVH, Sk, Dh] with `kv_heads_major`, the
  KV cache's layout, which the matmuls read without a transpose); mask bool, broadcastable to [B, Sq, Sk]
  (True = may attend). Returns [B, Sq, H, Dh] in v's dtype.
  """
  b, sq, h, dh = q.shape
  dtype = v.dtype
  kvh = k.shape[1] if kv_heads_major else k.shape[2]
  kv = "bksd" if kv_heads_major else "bskd"
  q = q.reshape(b, sq, kvh, h // kvh, dh)
  scores = jnp.einsum(f"bqkgd,{kv}->bkgqs", q, k, precision=precision, preferred_element_type=jnp.float32)
  scores = scores * scale
  if mask is not None:
    scores = jnp.where(mask[:, None, None, :, :], scores, MASKED)
  # Softmax with the normalisation after the value product (in float32), as flash attention does: with
  # normalised probabilities XLA may move the division across the product depending on the shapes,
  # which made bf16 outputs depend on the batch size.
  weights = jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True))
  total = jnp.sum(weights, axis=-1)  # [b, kvh, g, q]
  weights = weights.astype(v.dtype)
  if kv_heads_major and v.dtype != jnp.float32 and (h // kvh) * sq > 1 and jax.default_backend() == "cpu":
    # XLA:CPU has no bf16 x bf16 -> f32 batched matmul for this operand order (several queries per KV
    # head); the same products in f32 (exact for bf16 operands), accumulated in f32 as the bf16 dot would.
    weights, v = weights.astype(jnp.float32), v.astype(jnp.float32)
  out = jnp.einsum(f"bkgqs,{kv}->bqkgd", weights, v, precision=precision,
                   preferred_element_type=jnp.float32)
  out = out / jnp.transpose(total, (0, 3, 1, 2))[..., None]
  return out.astype(dtype).reshape(b, sq, h, dh)


def _log_once(level: int, *message: str) -> None:
  if message not in _logged:
    _logged.add(message)
    _logger.log(level, message[0], *message[1:])


def choose(requested: str, backend: str, dtype, sk: int, chunk: int, cached: bool, sq: int | None = None
           ) -> tuple[str, str]:
  """(implementation, why) for a request on `backend`; `why` is empty when the request is honoured.
  `sq` (None: as many queries as keys): "auto" on CPU blocks only when the [sq, sk] scores exceed one
  [chunk, chunk] block, so a decode step (one query over the cache) runs unblocked."""
  if requested not in IMPLEMENTATIONS:
    raise ValueError(f"ModelConfig.attention must be one of {IMPLEMENTATIONS}, got {requested!r}")
  half = jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
  fallback = "chunked" if backend == "cpu" else "xla"
  if requested == "auto":
    if backend == "gpu" and cached and sq == 1:  # the kernel would need the cache transposed every step
      return "xla", "a decode step's single query reads the [B, KVH, S, Dh] cache as it is"
    if backend == "gpu":
      return ("cudnn", "") if half else ("xla", "cudnn needs bfloat16/float16 compute")
    if backend == "tpu":
      return ("xla", "splash runs without a KV cache only") if cached else ("splash", "")
    sq = sk if sq is None else sq
    if sq * sk > chunk * chunk:
      return "chunked", ""
    return "xla", f"{sq} x {sk} scores fit one {chunk} x {chunk} block"
  if requested == "cudnn" and backend != "gpu":
    return fallback, f"cudnn needs a GPU (backend is {backend})"
  if requested == "cudnn" and not half:
    return fallback, f"cudnn needs bfloat16/float16 compute, got {jnp.dtype(dtype).name}"
  if requested == "splash" and backend != "tpu":
    return fallback, f"splash needs a TPU (backend is {backend})"
  if requested == "splash" and cached:
    return fallback, "splash runs without a KV cache only"
  return requested, ""


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: KeyMask, scale: float, cfg: ModelConfig,
              kv_heads_major: bool = False) -> jax.Array:
  """The one attention function: q [B, Sq, H, Dh], k/v [B, Sk, KVH, Dh] -> [B, Sq, H, Dh] (v's dtype).
  `kv_heads_major`: k/v are [B, KVH, Sk, Dh] (the KV cache's layout)."""
  backend = jax.default_backend()
  sk = k.shape[2] if kv_heads_major else k.shape[1]
  impl, why = choose(cfg.attention, backend, q.dtype, sk, cfg.attention_chunk, mask.offset is not None, q.shape[1])
  if cfg.attention == "auto":
    _log_once(logging.INFO, "attention: auto -> %s on %s%s", impl, backend, f" ({why})" if why else "")
  elif why:
    _log_once(logging.WARNING, "attention: %r cannot run here: %s; using %r", cfg.attention, why, impl)
  precision = matmul_precision(cfg)
  fallback = "chunked" if backend == "cpu" else "xla"
  try:
    if impl in ("cudnn", "splash") and kv_heads_major:  # the kernels take [B, Sk, KVH, Dh]
      k, v, kv_heads_major = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2), False
    if impl == "cudnn":
      return attention_fused.jax_nn_attention(q, k, v, mask, scale, "cudnn")
    if impl == "splash":
      return attention_fused.splash_attention(q, k, v, mask, scale)
  except (attention_fused.Unsupported, NotImplementedError, ValueError, RuntimeError) as e:
    _log_once(logging.WARNING, "attention: %r refused this case (%s); using %r", impl,
              str(e).splitlines()[0][:200], fallback)
    impl = fallback
  if impl == "chunked":
    return chunked_attention(q, k, v, mask.key_valid(sk), mask.causal, mask.offset, scale, cfg.attention_chunk,
                             precision, kv_heads_major)
  return dot_product_attention(q, k, v, mask.dense(q.shape[1], sk), scale, precision, kv_heads_major)


class EncoderAttention(nn.Module):
  """Whisper self-attention: query/value/out with bias, key without bias, scale 1/sqrt(head_dim).
  `lengths` [B] (or None): keys past a clip's length are hidden."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x: jax.Array, lengths: jax.Array | None) -> jax.Array:
    ecfg = self.cfg.encoder
    b, t, d = x.shape
    heads = lambda y: y.reshape(b, t, ecfg.n_heads, ecfg.head_dim)  # noqa: E731
    q = heads(checkpoint_name(Linear(d, ("embed", "heads"), self.cfg, name="query")(x), "query_proj"))
    k = heads(checkpoint_name(Linear(d, ("embed", "heads"), self.cfg, use_bias=False, name="key")(x), "key_proj"))
    v = heads(checkpoint_name(Linear(d, ("embed", "heads"), self.cfg, name="value")(x), "value_proj"))
    out = attention(q, k, v, KeyMask(lengths=lengths), ecfg.head_dim**-0.5, self.cfg)
    out = checkpoint_name(out.reshape(b, t, d), "context")
    return checkpoint_name(Linear(d, ("heads", "embed"), self.cfg, name="out")(out), "out_proj")


class DecoderAttention(nn.Module):
  """Qwen attention: q/k/v (bias; one fused `qkv` kernel with `fused_qkv`), RoPE, optional logn query
  scale, grouped KV heads, o (no bias).

  `key_valid` [B, Sk] bool: real tokens (cache slots when cached); attention is causal. With `layer_kv`
  = (k_cache, v_cache, layer), caches [L, B, KVH, S_max, Dh] of every layer, the new keys/values are
  written in place at [layer, :, :, cache_index] and attention runs over this layer's S_max slots (the mask
  hides unwritten/padded ones). Returns (output, updated (k_cache, v_cache) or None).
  """

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, cos, sin, q_scale, key_valid, cache_index, layer_kv):
    dcfg = self.cfg.decoder
    b, s, _ = x.shape
    dh = dcfg.head_dim
    if dcfg.fused_qkv:  # one [D, 3, H*dh] kernel, sharded like q along its heads axis
      qkv = Linear((3, dcfg.n_heads * dh), ("embed", None, "heads"), self.cfg, use_bias=dcfg.qkv_bias,
                   name="qkv")(x)
      q, k, v = qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :]
    else:
      q = Linear(dcfg.n_heads * dh, ("embed", "heads"), self.cfg, use_bias=dcfg.qkv_bias, name="q")(x)
      k = Linear(dcfg.n_kv_heads * dh, ("embed", "kv_heads"), self.cfg, use_bias=dcfg.qkv_bias, name="k")(x)
      v = Linear(dcfg.n_kv_heads * dh, ("embed", "kv_heads"), self.cfg, use_bias=dcfg.qkv_bias, name="v")(x)
    q, k, v = checkpoint_name(q, "query_proj"), checkpoint_name(k, "key_proj"), checkpoint_name(v, "value_proj")
    q = rope.apply_rope(q.reshape(b, s, dcfg.n_heads, dh), cos, sin)
    k = rope.apply_rope(k.reshape(b, s, dcfg.n_kv_heads, dh), cos, sin)
    v = v.reshape(b, s, dcfg.n_kv_heads, dh)
    q = (q.astype(jnp.float32) * q_scale[:, :, None, None]).astype(q.dtype)
    new_kv, offset = None, None
    if layer_kv is not None:
      k_cache, v_cache, layer = layer_kv
      start = (layer, 0, 0, cache_index, 0)
      k_cache = jax.lax.dynamic_update_slice(k_cache, jnp.swapaxes(k, 1, 2)[None].astype(k_cache.dtype), start)
      v_cache = jax.lax.dynamic_update_slice(v_cache, jnp.swapaxes(v, 1, 2)[None].astype(v_cache.dtype), start)
      k = jax.lax.dynamic_index_in_dim(k_cache, layer, 0, keepdims=False)  # [B, KVH, S_max, Dh]
      v = jax.lax.dynamic_index_in_dim(v_cache, layer, 0, keepdims=False)
      new_kv, offset = (k_cache, v_cache), cache_index
    dtype = compute_dtype(self.cfg)
    mask = KeyMask(valid=key_valid, causal=True, offset=offset)
    out = attention(q, k.astype(dtype), v.astype(dtype), mask, dh**-0.5, self.cfg, kv_heads_major=new_kv is not None)
    out = checkpoint_name(out.reshape(b, s, dcfg.n_heads * dh), "context")
    out = Linear(dcfg.d_model, ("heads", "embed"), self.cfg, use_bias=False, name="o")(out)
    return checkpoint_name(out, "out_proj"), new_kv
