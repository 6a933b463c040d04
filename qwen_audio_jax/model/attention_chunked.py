"""Blockwise (flash-style) attention in plain JAX: query and key blocks, online softmax, custom backward.

Never holds more than a [block, block] slab of scores per (batch, head): for each query block the
forward scans key blocks keeping a running max `m`, normaliser `l` and fp32 accumulator; the backward
(custom VJP) recomputes each block's probabilities from the saved `m` and `l` (no [Sq, Sk] residual).

Masking matches the reference (`attention.dot_product_attention`): a masked score becomes the finite
float32 minimum, so a row with no visible key averages all Sk values (uniform softmax) and its
masked scores get no gradient; the keys added to fill the last block get -inf and never count.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

MASKED = float(jnp.finfo(jnp.float32).min)


def _scores(q, kb, valid_b, block_index, offset, causal: bool, n_keys: int, scale: float, precision):
  """Masked fp32 scores of one key block: q [B,K,G,Sq,D] x kb [B,K,bk,D] -> [B,K,G,Sq,bk] and the
  `allowed` mask [B,1,1,Sq|1,bk]."""
  bk = kb.shape[2]
  s = jnp.einsum("bkgqd,bksd->bkgqs", q, kb, precision=precision, preferred_element_type=jnp.float32) * scale
  key_pos = block_index * bk + jnp.arange(bk)
  allowed = valid_b[:, None, None, None, :]
  if causal:
    query_pos = offset + jnp.arange(q.shape[3])
    allowed = allowed & (key_pos[None, :] <= query_pos[:, None])[None, None, None]
  filler = jnp.where(key_pos < n_keys, MASKED, -jnp.inf)  # keys past Sk only fill the last block
  return jnp.where(allowed, s, filler), allowed


def _blocks(x, block: int, heads_major: bool = False):
  """[B, Sk, K, D] ([B, K, Sk, D] when heads_major; zero-filled to a multiple of block) -> [n, B, K, block, D]."""
  if heads_major:
    b, kh, sk, d = x.shape
    n = -(-sk // block)
    x = jnp.pad(x, ((0, 0), (0, 0), (0, n * block - sk), (0, 0)))
    return x.reshape(b, kh, n, block, d).transpose(2, 0, 1, 3, 4)
  b, sk, kh, d = x.shape
  n = -(-sk // block)
  x = jnp.pad(x, ((0, 0), (0, n * block - sk), (0, 0), (0, 0)))
  return x.reshape(b, n, block, kh, d).transpose(1, 0, 3, 2, 4)


def _forward(q, kb, vb, valid_b, offset, causal, scale, n_keys, precision):
  """q [B,K,G,Sq,D]; kb, vb [n,B,K,bk,D] key blocks; valid_b [n,B,bk] bool -> (out, m, l)."""
  b, kh, g, sq, d = q.shape

  def body(carry, xs):
    m, l, acc = carry
    k_j, v_j, valid_j, j = xs
    s, _ = _scores(q, k_j, valid_j, j, offset, causal, n_keys, scale, precision)
    m_new = jnp.maximum(m, jnp.max(s, axis=-1))
    correction = jnp.exp(m - m_new)
    p = jnp.exp(s - m_new[..., None])
    l = l * correction + jnp.sum(p, axis=-1)
    pv = jnp.einsum("bkgqs,bksd->bkgqd", p.astype(vb.dtype), v_j, precision=precision,
                    preferred_element_type=jnp.float32)
    return (m_new, l, acc * correction[..., None] + pv), None

  init = (jnp.full((b, kh, g, sq), MASKED, jnp.float32), jnp.zeros((b, kh, g, sq), jnp.float32),
          jnp.zeros((b, kh, g, sq, d), jnp.float32))
  (m, l, acc), _ = jax.lax.scan(body, init, (kb, vb, valid_b, jnp.arange(kb.shape[0])))
  return (acc / l[..., None]).astype(vb.dtype), m, l


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8))
def _flash(q, kb, vb, valid_b, offset, causal, scale, n_keys, precision):
  return _forward(q, kb, vb, valid_b, offset, causal, scale, n_keys, precision)[0]


def _flash_fwd(q, kb, vb, valid_b, offset, causal, scale, n_keys, precision):
  out, m, l = _forward(q, kb, vb, valid_b, offset, causal, scale, n_keys, precision)
  return out, (q, kb, vb, valid_b, offset, out, m, l)


def _flash_bwd(causal, scale, n_keys, precision, residuals, d_out):
  q, kb, vb, valid_b, offset, out, m, l = residuals
  delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)  # [B,K,G,Sq]
  inv_l = 1.0 / l

  def body(dq, xs):
    k_j, v_j, valid_j, j = xs
    s, allowed = _scores(q, k_j, valid_j, j, offset, causal, n_keys, scale, precision)
    p = jnp.exp(s - m[..., None]) * inv_l[..., None]
    dv_j = jnp.einsum("bkgqs,bkgqd->bksd", p.astype(d_out.dtype), d_out, precision=precision,
                      preferred_element_type=jnp.float32)
    dp = jnp.einsum("bkgqd,bksd->bkgqs", d_out, v_j, precision=precision, preferred_element_type=jnp.float32)
    ds = (jnp.where(allowed, p * (dp - delta[..., None]), 0.0) * scale).astype(q.dtype)  # masked: constants
    dq = dq + jnp.einsum("bkgqs,bksd->bkgqd", ds, k_j, precision=precision, preferred_element_type=jnp.float32)
    dk_j = jnp.einsum("bkgqs,bkgqd->bksd", ds, q, precision=precision, preferred_element_type=jnp.float32)
    return dq, (dk_j, dv_j)

  dq, (dk, dv) = jax.lax.scan(body, jnp.zeros(q.shape, jnp.float32), (kb, vb, valid_b, jnp.arange(kb.shape[0])))
  return dq.astype(q.dtype), dk.astype(kb.dtype), dv.astype(vb.dtype), None, None


_flash.defvjp(_flash_fwd, _flash_bwd)


def _balanced(length: int, target: int) -> int:
  """Block size near `target` that splits `length` into equal blocks (1500 -> 250, 2048 -> 256)."""
  n = -(-length // max(1, target))
  return -(-length // n)


def chunked_attention(q: jax.Array, k: jax.Array, v: jax.Array, key_valid: jax.Array | None, causal: bool,
                      offset: jax.Array | None, scale: float, block: int, precision=None,
                      kv_heads_major: bool = False) -> jax.Array:
  """softmax(scale * q k^T + mask) v without materialising the scores.

  q [B, Sq, H, Dh]; k, v [B, Sk, KVH, Dh] (H % KVH == 0; [B, KVH, Sk, Dh] with `kv_heads_major`, the KV
  cache's layout); key_valid [B, Sk] bool or None; with `causal`,
  query i sits at key slot offset + i (offset None = 0). Returns [B, Sq, H, Dh] in v's dtype.
  Queries and keys are both split into blocks of about `block` (equal sizes, so 1500 frames make six
  blocks of 250): per step only a [B, H, block, block] slab of scores is live (CPU: 24% less time at
  T=1500 than whole-query slabs, bench/README.md).
  """
  b, sq, h, dh = q.shape
  sk, kh = (k.shape[2], k.shape[1]) if kv_heads_major else (k.shape[1], k.shape[2])
  if key_valid is None:
    key_valid = jnp.ones((b, sk), bool)
  offset = jnp.zeros((), jnp.int32) if offset is None else jnp.asarray(offset, jnp.int32)
  key_valid = jnp.asarray(key_valid, bool)
  qg = q.reshape(b, sq, kh, h // kh, dh).transpose(0, 2, 3, 1, 4)  # [B, K, G, Sq, D]
  bk, bq = _balanced(sk, block), _balanced(sq, block)
  kb, vb = _blocks(k, bk, kv_heads_major), _blocks(v, bk, kv_heads_major)  # once, outside the query loop
  n = kb.shape[0]
  valid_b = jnp.pad(key_valid, ((0, 0), (0, n * bk - sk))).reshape(b, n, bk).transpose(1, 0, 2)
  flash = lambda qs, start: _flash(qs, kb, vb, valid_b, start, causal, float(scale), sk, precision)  # noqa: E731
  nq = -(-sq // bq)
  if nq == 1:
    out = flash(qg, offset)
  else:
    qb = jnp.pad(qg, ((0, 0),) * 3 + ((0, nq * bq - sq), (0, 0))).reshape(b, kh, h // kh, nq, bq, dh)
    starts = offset + bq * jnp.arange(nq, dtype=jnp.int32)
    out = jax.lax.map(lambda xs: flash(*xs), (jnp.moveaxis(qb, 3, 0), starts))
    out = jnp.moveaxis(out, 0, 3).reshape(b, kh, h // kh, nq * bq, dh)[:, :, :, :sq]
  return out.transpose(0, 3, 1, 2, 4).reshape(b, sq, h, dh)
