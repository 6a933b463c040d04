"""Rotary position embedding (half-split, NeoX style) with Qwen v1's dynamic NTK and logn scaling.

Pure functions on arrays, all in float32 (spec §3.3, §3.4). Both NTK and logn apply at inference only;
the caller decides (the decoder passes alpha = 1 and no logn scale when training).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def ntk_alpha(true_length: jax.Array, seq_length: int) -> jax.Array:
  """alpha = max(2^ceil(log2(L / seq_length) + 1) - 1, 1), per row, float32.

  Evaluated with exact comparisons instead of a float log: m = smallest m >= 0 with
  seq_length * 2^m >= L, alpha = 2^(m + 1) - 1 (1 for L <= seq_length, 3 up to 2x, 7 up to 4x, ...).
  """
  length = jnp.asarray(true_length, jnp.float32)
  m = sum((float(seq_length) * 2.0**j < length).astype(jnp.int32) for j in range(24))
  return jnp.where(m == 0, 1.0, 2.0 ** (m + 1).astype(jnp.float32) - 1.0).astype(jnp.float32)


def inv_frequencies(head_dim: int, base: float, alpha: jax.Array | None = None) -> jax.Array:
  """1 / base'^(2i / head_dim) with base' = base * alpha^(head_dim / (head_dim - 2)).

  alpha: None (-> shape [head_dim/2]) or per row [B] (-> [B, head_dim/2]).
  """
  exponents = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim
  if alpha is None:
    return 1.0 / jnp.float32(base) ** exponents
  scaled = jnp.float32(base) * jnp.asarray(alpha, jnp.float32) ** (head_dim / (head_dim - 2))
  return 1.0 / scaled[:, None] ** exponents[None, :]


def rope_tables(positions: jax.Array, inv_freq: jax.Array) -> tuple[jax.Array, jax.Array]:
  """cos/sin tables [B, S, head_dim] for integer positions [B, S] and inv_freq [head_dim/2] or [B, head_dim/2]."""
  if inv_freq.ndim == 1:
    inv_freq = inv_freq[None, :]
  angles = positions.astype(jnp.float32)[:, :, None] * inv_freq[:, None, :]
  angles = jnp.concatenate([angles, angles], axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """x [B, S, H, Dh] -> x*cos + rotate_half(x)*sin (in float32, cast back to x.dtype)."""
  x32 = x.astype(jnp.float32)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
  out = x32 * cos[:, :, None, :] + rotated * sin[:, :, None, :]
  return out.astype(x.dtype)


def logn_scale(positions: jax.Array, seq_length: int) -> jax.Array:
  """Query scale log(p+1)/log(seq_length) where p+1 > seq_length, else 1; [B, S] float32."""
  p1 = positions.astype(jnp.float32) + 1.0
  return jnp.where(p1 > seq_length, jnp.log(p1) / jnp.log(jnp.float32(seq_length)), 1.0).astype(jnp.float32)
