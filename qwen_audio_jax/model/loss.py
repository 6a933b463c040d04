"""Masked next-token cross-entropy in float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp


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
