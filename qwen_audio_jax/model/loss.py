"""Masked next-token cross-entropy in float32: on given logits, or blocked through the lm_head.

`chunked_loss` is what training uses: it never materialises [B, S, V] logits, forward or backward.
A `lax.scan` runs over blocks of vocabulary columns: each block's fp32 logits [B, S, V/n] are reduced
to a running logsumexp and target logit per token, then dropped. The block step is rematerialised
(`jax.checkpoint`), so the backward pass recomputes each block's logits instead of keeping them (one
extra lm_head matmul); it stores only two [B, S] carries per block.
Why vocabulary blocks: each block's lm_head gradient is complete after its own step (one reduction
over the batch shards in all), and tokens keep their data/fsdp sharding. Blocks over the sequence
would instead re-reduce the whole lm_head gradient once per block. Block j takes the strided columns
j, j + n, j + 2n, ..., so with the vocabulary split over `tensor` every block is split the same way.
Optionally (`ModelConfig.loss_chunk`) the sequence is also cut into blocks (outer scan, rematerialised),
which bounds memory for very long sequences at the cost of that per-block reduction.
"""

from __future__ import annotations

import math
from typing import Mapping

import jax
import jax.numpy as jnp

from qwen_audio_jax.model.config import ModelConfig
from qwen_audio_jax.model.layers import constrain, dense

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


def vocab_blocks(columns: int, align: int, block: int) -> tuple[int, int]:
  """(n_blocks, width) with n_blocks · width >= columns and width a multiple of `align` (when it divides
  `columns`). Takes the exact split whose width is nearest to `block` if that is within a factor 2
  (no copy of the kernel); otherwise n = ceil(columns / block) with the kernel padded. block <= 0: one block."""
  if block <= 0 or columns <= block:
    return 1, columns
  unit = align if columns % align == 0 else 1
  units = columns // unit
  error, n = min((abs(math.log(columns / n / block)), n) for n in range(1, units + 1) if units % n == 0)
  if error <= math.log(2):
    return n, columns // n
  n = math.ceil(columns / block)
  return n, math.ceil(columns / n / unit) * unit


def _block_nll_sum(h: jax.Array, targets: jax.Array, weights: jax.Array, kernel: jax.Array,
                   lora: tuple[jax.Array, jax.Array] | None, cfg: ModelConfig) -> jax.Array:
  """Sum of weight · (logsumexp - target logit) over h [B, c, D]; kernel [D, width, n] (strided blocks),
  lora (A [D, r], B [r, width, n]) or None. Columns >= vocab_size (padding) are masked."""
  width, n = kernel.shape[-2:]
  vocab_size = cfg.decoder.vocab_size

  def step(carry, j):
    log_z, target_logit = carry
    take = lambda x: jax.lax.dynamic_index_in_dim(x, j, axis=x.ndim - 1, keepdims=False)
    block_lora = None if lora is None else (lora[0], take(lora[1]))
    logits = constrain(dense(h, take(kernel), cfg, jnp.float32, block_lora).astype(jnp.float32), LOGIT_AXES)
    columns = jnp.arange(width) * n + j
    logits = jnp.where(columns < vocab_size, logits, MASKED)
    log_z = jnp.logaddexp(log_z, jax.nn.logsumexp(logits, axis=-1))
    picked = jnp.take_along_axis(logits, (targets // n)[..., None], axis=-1)[..., 0]
    return (log_z, target_logit + jnp.where(targets % n == j, picked, 0.0)), None

  init = (jnp.full(targets.shape, MASKED, jnp.float32), jnp.zeros(targets.shape, jnp.float32))
  (log_z, target_logit), _ = jax.lax.scan(jax.checkpoint(step, prevent_cse=False), init, jnp.arange(n))
  return jnp.sum(jnp.where(weights > 0, log_z - target_logit, 0.0) * weights)


def chunked_loss(hidden: jax.Array, head: Mapping[str, jax.Array], targets: jax.Array, loss_mask: jax.Array,
                 cfg: ModelConfig) -> tuple[jax.Array, jax.Array]:
  """`loss_fn(hidden @ lm_head, targets, loss_mask)` without the full logits.

  hidden [B, S, D] (final-normed decoder states); head: the lm_head's {"kernel" [D, V']} (V' >= vocab_size,
  padded columns are masked), plus "lora_a" [D, r] / "lora_b" [r, V'] (scaled, see train/lora.py) when the
  lm_head carries a LoRA adapter; targets / loss_mask [B, S]. Block sizes: cfg.loss_vocab_block columns,
  cfg.loss_chunk positions (0: the whole sequence). Returns (mean loss, token count).
  """
  kernel = head["kernel"]
  lora_b = head.get("lora_b")
  columns = kernel.shape[-1]
  n, width = vocab_blocks(columns, cfg.decoder.vocab_pad_to, cfg.loss_vocab_block)
  if n * width > columns:  # no exact split: zero columns (masked like the padded vocabulary)
    kernel = jnp.pad(kernel, ((0, 0), (0, n * width - columns)))
    lora_b = None if lora_b is None else jnp.pad(lora_b, ((0, 0), (0, n * width - columns)))
  strided = lambda w: w.reshape(w.shape[0], width, n)  # block j = columns j, j + n, j + 2n, ...
  kernel = strided(kernel)
  lora = None if lora_b is None else (head["lora_a"], strided(lora_b))
  weights = (loss_mask == 1).astype(jnp.float32)
  targets = targets.astype(jnp.int32)
  count = jnp.sum(weights)

  b, s, _ = hidden.shape
  chunk = cfg.loss_chunk
  if chunk <= 0 or chunk >= s:
    return _block_nll_sum(hidden, targets, weights, kernel, lora, cfg) / jnp.maximum(count, 1.0), count
  n_chunks = -(-s // chunk)
  pad = n_chunks * chunk - s
  if pad:  # the tail chunk gets masked positions
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets, weights = jnp.pad(targets, ((0, 0), (0, pad))), jnp.pad(weights, ((0, 0), (0, pad)))
  blocks = lambda x: jnp.swapaxes(x.reshape((b, n_chunks, chunk) + x.shape[2:]), 0, 1)  # [n, B, chunk, ...]
  chunk_sum = jax.checkpoint(lambda h, t, w: _block_nll_sum(h, t, w, kernel, lora, cfg), prevent_cse=False)
  total, _ = jax.lax.scan(lambda acc, xs: (acc + chunk_sum(*xs), None), jnp.zeros((), jnp.float32),
                          (blocks(hidden), blocks(targets), blocks(weights)))
  return total / jnp.maximum(count, 1.0), count
