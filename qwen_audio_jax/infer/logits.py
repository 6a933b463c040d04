"""Next-token choice from fp32 logits: suppression, greedy argmax, temperature / top-k / top-p sampling.

Pure jnp functions, run inside the compiled decode loop. Sampling follows transformers' warpers
(temperature, then top-k keeping ties with the k-th value, then top-p keeping the smallest set whose
probability reaches top_p, at least one token); each row samples with its own key.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf


def suppress(logits: jax.Array, suppress_mask: jax.Array | None, begin_mask: jax.Array | None = None,
             step: jax.Array | None = None) -> jax.Array:
  """logits [B, V] with ids where suppress_mask [V] is True set to -inf, and at step 0 also those where
  begin_mask [V] is True."""
  if suppress_mask is not None:
    logits = jnp.where(suppress_mask[None, :], NEG_INF, logits)
  if begin_mask is not None:
    logits = jnp.where(begin_mask[None, :] & (step == 0), NEG_INF, logits)
  return logits


def filter_top_k_top_p(logits: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
  """Masks logits [B, V] outside top-k (k = 0: off) and outside the top-p nucleus (p = 1: off).

  top_k and top_p are traced scalars, so changing them does not recompile.
  """
  vocab = logits.shape[-1]
  ordered = -jnp.sort(-logits, axis=-1)  # descending
  k = jnp.clip(top_k, 1, vocab)
  kth = jnp.take_along_axis(ordered, jnp.broadcast_to(k - 1, ordered.shape[:-1] + (1,)), axis=-1)
  logits = jnp.where((top_k > 0) & (logits < kth), NEG_INF, logits)
  ordered = jnp.where((top_k > 0) & (ordered < kth), NEG_INF, ordered)
  probs = jax.nn.softmax(ordered, axis=-1)
  before = jnp.cumsum(probs, axis=-1) - probs  # probability mass strictly before each sorted token
  keep_sorted = before < top_p
  # The smallest kept logit is the threshold; ties with it are kept, as with a cumulative cut.
  threshold = jnp.min(jnp.where(keep_sorted, ordered, jnp.inf), axis=-1, keepdims=True)
  return jnp.where((top_p < 1.0) & (logits < threshold), NEG_INF, logits)


def row_keys(seed: jax.Array, row_seeds: jax.Array, step: jax.Array) -> jax.Array:
  """One PRNG key per row: fold_in(fold_in(key(seed), row_seed), step)."""
  base = jax.random.PRNGKey(seed)
  return jax.vmap(lambda r: jax.random.fold_in(jax.random.fold_in(base, r), step))(row_seeds)


def choose(logits: jax.Array, sample: bool, temperature, top_k, top_p, keys) -> jax.Array:
  """Greedy argmax, or a sample per row after temperature / top-k / top-p. Returns int32 [B]."""
  if not sample:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = filter_top_k_top_p(logits / temperature, top_k, top_p)
  return jax.vmap(lambda key, row: jax.random.categorical(key, row))(keys, logits).astype(jnp.int32)
