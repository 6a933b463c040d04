"""When a row stops: end ids, multi-token stop sequences, its token limit, and the repetition guard.

Every check looks at the generated-token buffer [B, N] after token t was written; pure jnp.
Finish reasons are small ints (see REASONS); 0 means the row is still running.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

REASONS = ("running", "stop", "length", "audio_cap", "loop")
RUNNING, STOP, LENGTH, AUDIO_CAP, LOOP = range(len(REASONS))


def _last(tokens: jax.Array, t: jax.Array, n: int) -> jax.Array:
  """tokens[:, t-n+1 .. t] as [B, n] (entries before column 0 read as -1)."""
  idx = t - n + 1 + jnp.arange(n)
  window = jnp.take(tokens, jnp.clip(idx, 0, tokens.shape[1] - 1), axis=1)
  return jnp.where(idx[None, :] >= 0, window, -1)


def hits_stop(tokens: jax.Array, t: jax.Array, eos_ids: tuple[int, ...],
              stop_sequences: tuple[tuple[int, ...], ...]) -> jax.Array:
  """[B] bool: token t is an end id, or tokens ending at t spell a stop sequence."""
  last = tokens[:, t]
  hit = jnp.zeros(last.shape, bool)
  for i in eos_ids:
    hit |= last == i
  for seq in stop_sequences:
    hit |= jnp.all(_last(tokens, t, len(seq)) == jnp.asarray(seq, tokens.dtype)[None, :], axis=1)
  return hit


def hits_loop(tokens: jax.Array, t: jax.Array, window: int, max_period: int) -> jax.Array:
  """[B] bool: the last `window` tokens repeat a pattern of some period p <= max_period."""
  if window <= 0:
    return jnp.zeros(tokens.shape[:1], bool)
  last = _last(tokens, t, window)
  full = t + 1 >= window
  hit = jnp.zeros(tokens.shape[:1], bool)
  for p in range(1, max_period + 1):
    hit |= jnp.all(last[:, p:] == last[:, :-p], axis=1)
  return hit & full


def finish_reason(stop: jax.Array, loop: jax.Array, length: jax.Array, limit: jax.Array,
                  max_new_tokens: jax.Array) -> jax.Array:
  """Reason code per row for rows that stop now (RUNNING where none applies). A stop token wins."""
  limited = jnp.where(limit < max_new_tokens, AUDIO_CAP, LENGTH)
  reason = jnp.where(length >= limit, limited, RUNNING)
  reason = jnp.where(loop, LOOP, reason)
  return jnp.where(stop, STOP, reason).astype(jnp.int32)
