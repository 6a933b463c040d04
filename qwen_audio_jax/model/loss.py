"""Masked next-token cross-entropy in float32: on given logits, or chunked through the lm_head.

`chunked_loss` is what training uses: it never materialises [B, S, V] logits, forward or backward.
The sequence is cut into blocks of `chunk` positions; a `lax.scan` projects one block [B, chunk, D]
to fp32 logits [B, chunk, V], reduces it to one summed loss and drops it. The block function is
rematerialised (`jax.checkpoint`), so the backward pass recomputes each block's logits instead of
keeping them: peak memory holds O(B·chunk·V) logits, at the cost of one extra lm_head matmul per block.
The batch dimension stays whole inside a block, so data/fsdp sharding of the rows is kept.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from qwen_audio_jax.model.layers import constrain

MASKED = float(jnp.finfo(jnp.float32).min)
LOGIT_AXES = ("activation_batch", "activation_length", "activation_vocab")


def loss_fn(logits: jax.Array, targets: jax.Array, loss_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean cross-entropy over tokens with loss_mask == 1.

  logits [B, S, V] (any float dtype, upcast to fp32), targets [B, S] int, loss_mask [B, S] (0/1).
  Targets are already aligned with the logits (shift done by the caller). Returns (loss, token_count);
  the loss is 0 when no token is selected.
  """
  logits = logits.astype(jnp.float32)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  weights = (loss_mask == 1).astype(jnp.float32)
  count = jnp.sum(weights)
  loss = jnp.sum((log_z - target_logit) * weights) / jnp.maximum(count, 1.0)
  return loss, count


def _block_nll_sum(project: Callable[[jax.Array], jax.Array], vocab_size: int, h: jax.Array, targets: jax.Array,
                   weights: jax.Array) -> jax.Array:
  """Sum over the block of weight · (logsumexp - target logit); columns >= vocab_size are masked."""
  logits = constrain(project(h).astype(jnp.float32), LOGIT_AXES)
  if logits.shape[-1] > vocab_size:  # padded vocabulary rows: never a valid prediction
    logits = jnp.where(jnp.arange(logits.shape[-1]) < vocab_size, logits, MASKED)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return jnp.sum(jnp.where(weights > 0, log_z - target_logit, 0.0) * weights)


def chunked_loss(hidden: jax.Array, project: Callable[[jax.Array], jax.Array], targets: jax.Array,
                 loss_mask: jax.Array, vocab_size: int, chunk: int) -> tuple[jax.Array, jax.Array]:
  """`loss_fn(project(hidden), targets, loss_mask)` without the full logits.

  hidden [B, S, D] (final-normed decoder states), project: [B, c, D] -> logits [B, c, V'] with
  V' >= vocab_size (e.g. `Model.project(h, padded=True)`; columns >= vocab_size are masked out),
  targets / loss_mask [B, S]. `chunk` positions per block (<= 0 or >= S: one block); S need not be
  a multiple (the tail block is padded with masked positions). Returns (mean loss, token count).
  """
  b, s, _ = hidden.shape
  chunk = s if chunk <= 0 else min(chunk, s)
  n_blocks = -(-s // chunk)
  pad = n_blocks * chunk - s
  weights = (loss_mask == 1).astype(jnp.float32)
  targets = targets.astype(jnp.int32)
  if pad:
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets, weights = jnp.pad(targets, ((0, 0), (0, pad))), jnp.pad(weights, ((0, 0), (0, pad)))
  blocks = lambda x: jnp.swapaxes(x.reshape((b, n_blocks, chunk) + x.shape[2:]), 0, 1)  # [n, B, chunk, ...]
  block_sum = jax.checkpoint(lambda h, t, w: _block_nll_sum(project, vocab_size, h, t, w))

  def body(total, xs):
    return total + block_sum(*xs), None

  total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), (blocks(hidden), blocks(targets), blocks(weights)))
  count = jnp.sum(weights)
  return total / jnp.maximum(count, 1.0), count
