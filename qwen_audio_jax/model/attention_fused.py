"""Accelerator attention kernels behind `attention.attention`: cuDNN flash attention (through
`jax.nn.dot_product_attention`) on GPU and Pallas splash attention on TPU.

Each wrapper translates the model's mask (`KeyMask`: key validity, causal, cache offset) into what the
kernel accepts, and raises `Unsupported` (a trace-time error) when it cannot express the case, so the
dispatcher falls back with one logged reason.

cuDNN refuses a broadcast [B, 1, 1, Sk] key mask ("Bias must have same seq length as QKV"), so:
* right-padded keys (the encoder's `lengths`; a causal batch whose rows are all prefixes) go in as
  `key_value_seq_lengths` (flash attention's padding mask, nothing materialised);
* any other pattern (left padding, a KV-cache offset) goes in as a full-shape [B, 1, Sq, Sk] boolean
  mask, which cuDNN takes as a bias.
A causal batch without a cache picks between the two at run time (`lax.cond`: all rows prefixes?).
Rows with no visible key are padding; their (unused) outputs differ between kernels but stay finite.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P


class Unsupported(Exception):
  """The kernel cannot run this case (shape, dtype, mask or platform); the message says why."""


def jax_nn_attention(q, k, v, mask, scale: float, implementation: str) -> jax.Array:
  """`jax.nn.dot_product_attention` with the mask passed as sequence lengths or a full-shape mask.

  implementation: "cudnn" on GPU; "xla" runs the same argument translation on any backend (tests).
  """
  b, sq, sk = q.shape[0], q.shape[1], k.shape[1]

  def call(**kw):
    return jax.nn.dot_product_attention(q, k, v, scale=scale, implementation=implementation, **kw)

  def full_mask():
    return jnp.broadcast_to(mask.dense(sq, sk)[:, None], (b, 1, sq, sk))

  if not mask.causal:
    if mask.lengths is not None:
      return call(key_value_seq_lengths=jnp.maximum(jnp.asarray(mask.lengths, jnp.int32), 1))
    return call() if mask.valid is None else call(mask=full_mask())
  if mask.offset is not None:  # KV cache: query i sits at slot offset + i
    return call(mask=full_mask())
  valid = mask.key_valid(sk)
  if valid is None:
    return call(is_causal=True)
  count = jnp.sum(valid, axis=-1).astype(jnp.int32)
  prefix = jnp.all(valid == (jnp.arange(sk)[None, :] < count[:, None]))
  return jax.lax.cond(prefix, lambda: call(is_causal=True, key_value_seq_lengths=jnp.maximum(count, 1)),
                      lambda: call(mask=full_mask()))


# ------------------------------------------------------------------------------------------------
# Splash attention (TPU)
# ------------------------------------------------------------------------------------------------

LANES = 128  # splash blocks are multiples of this


def _block(length: int) -> int:
  return next(b for b in (512, 256, 128) if length % b == 0)


def splash_attention(q, k, v, mask, scale: float, interpret: bool = False) -> jax.Array:
  """Pallas splash attention; q [B, S, H, Dh], k/v [B, S, KVH, Dh] (self-attention, no cache).

  Padding becomes segment ids (real tokens 1, padding 0): real queries see real keys only, padded
  queries see padded keys (finite, unused). The sequence is padded to a multiple of 128 with more
  padding. Under a mesh the kernel runs per shard (shard_map over the batch axes and, when it
  divides the heads, the tensor axis). `interpret=True` runs the kernel on CPU (tests).
  """
  # pylint: disable=import-outside-toplevel
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask
  b, s, h, dh = q.shape
  kvh = k.shape[2]
  if mask.offset is not None or k.shape[1] != s:
    raise Unsupported("splash attention runs self-attention without a KV cache (prefill/decode use another kernel)")
  padded = -(-s // LANES) * LANES
  valid = mask.key_valid(s)
  segments = None
  if valid is not None or padded != s:
    valid = jnp.ones((b, s), bool) if valid is None else valid
    segments = jnp.pad(valid.astype(jnp.int32), ((0, 0), (0, padded - s)))
  fill = lambda x: jnp.pad(x, ((0, 0), (0, padded - s), (0, 0), (0, 0))).transpose(0, 2, 1, 3)  # noqa: E731
  qt, kt, vt = fill(q * jnp.asarray(scale, q.dtype)), fill(k), fill(v)
  head_mask = splash_mask.CausalMask((padded, padded)) if mask.causal else splash_mask.FullMask((padded, padded))
  blk = _block(padded)
  sizes = splash.BlockSizes(block_q=blk, block_kv=blk, block_kv_compute=blk, block_q_dkv=blk, block_kv_dkv=blk,
                            block_kv_dkv_compute=blk, block_q_dq=blk, block_kv_dq=blk)
  kernel = splash.make_splash_mha(splash_mask.MultiHeadMask([head_mask] * h), block_sizes=sizes, head_shards=1,
                                  q_seq_shards=1, interpret=interpret)

  def run(qt, kt, vt, segments):
    if segments is None:
      return jax.vmap(kernel)(qt, kt, vt)
    seg = splash.SegmentIds(q=segments, kv=segments)
    return jax.vmap(kernel)(qt, kt, vt, segment_ids=seg)

  out = _per_shard(run, b, h, kvh)(qt, kt, vt, segments)
  return out.transpose(0, 2, 1, 3)[:, :s]


def _per_shard(fn, batch: int, heads: int, kv_heads: int):
  """`fn(q, k, v, segments)` under shard_map over the context mesh (batch over data/fsdp, heads over
  tensor where they divide); `fn` itself without a mesh of more than one device."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return fn
  batch_axes = tuple(a for a in ("data", "fsdp") if a in mesh.shape)
  if batch % math.prod(mesh.shape[a] for a in batch_axes):
    batch_axes = ()
  tensor = mesh.shape.get("tensor", 1)
  head_axis = "tensor" if tensor > 1 and heads % tensor == 0 and kv_heads % tensor == 0 else None
  qkv, seg = P(batch_axes or None, head_axis, None, None), P(batch_axes or None, None)

  def sharded(qt, kt, vt, segments):
    if segments is None:
      return jax.shard_map(lambda a, b, c: fn(a, b, c, None), mesh=mesh, in_specs=(qkv, qkv, qkv), out_specs=qkv,
                           check_vma=False)(qt, kt, vt)
    return jax.shard_map(fn, mesh=mesh, in_specs=(qkv, qkv, qkv, seg), out_specs=qkv,
                         check_vma=False)(qt, kt, vt, segments)

  return sharded
