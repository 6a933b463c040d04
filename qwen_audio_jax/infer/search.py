"""Greedy and sampled decoding: one prefill, then a `lax.while_loop` of one-token steps on device.

The loop carries the KV cache (updated in place), the token buffer [B, N], per-row lengths and finish
reasons; nothing returns to the host until every row has stopped or N tokens were written. Finished
rows write `pad_id` and are ignored; the loop (and the model) stops once every row is done.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qwen_audio_jax.infer import logits as logits_lib
from qwen_audio_jax.infer import stopping
from qwen_audio_jax.infer.decode_fns import DecodeFns
from qwen_audio_jax.infer.settings import DecodeSettings


def cache_length(fns: DecodeFns, prompt: int, new: int) -> int:
  """Prompt + new-token slots, capped at the model's context (rows stop at their limit before it)."""
  return prompt + new if fns.max_context is None else min(prompt + new, fns.max_context)


def decode(fns: DecodeFns, settings: DecodeSettings, params, batch: dict, ctrl: dict, pad_id: int) -> dict:
  """Runs greedy or sampled decoding for a batch (inside jit).

  batch: model inputs (see decode_fns) plus `limit` [B] int32 (new-token limit per row; 0 = empty row)
  and `row_seed` [B] uint32. ctrl: traced scalars temperature, top_k, top_p, seed, max_new_tokens,
  and `suppress` [V] bool or absent.
  Returns {"tokens" [B, N] int32, "lengths" [B], "reasons" [B]} (reason codes of `stopping`).
  """
  n = settings.buffer_tokens
  sample = settings.strategy == "sample"
  limit = batch["limit"]
  rows = limit.shape[0]
  logits, cache = fns.prefill(params, batch, cache_length(fns, batch["input_ids"].shape[1], n))

  def pick(t, logits, tokens, done, lengths, reasons):
    """Token t of every row from `logits`, and the rows' stop state after it."""
    logits = logits_lib.suppress(logits, ctrl.get("suppress"), ctrl.get("begin_suppress"), t)
    keys = logits_lib.row_keys(ctrl["seed"], batch["row_seed"], t) if sample else None
    token = logits_lib.choose(logits, sample, ctrl["temperature"], ctrl["top_k"], ctrl["top_p"], keys)
    token = jnp.where(done, pad_id, token)
    tokens = tokens.at[:, t].set(token)
    lengths = lengths + (~done).astype(jnp.int32)
    stop = stopping.hits_stop(tokens, t, settings.eos_ids, settings.stop_sequences)
    loop = stopping.hits_loop(tokens, t, settings.loop_guard_tokens, settings.loop_guard_max_period)
    reason = stopping.finish_reason(stop, loop, lengths, limit, ctrl["max_new_tokens"])
    reasons = jnp.where(done, reasons, reason)
    return token, tokens, done | (reason != stopping.RUNNING), lengths, reasons

  def cond(state):
    t, done = state[0], state[4]
    return (t < n) & ~jnp.all(done)

  def body(state):
    # The model step runs only when another token is wanted (first token picked before the loop), so
    # there is no `lax.cond` around it: a conditional's outputs made XLA copy the whole cache each step.
    t, token, cache, tokens, done, lengths, reasons = state
    logits, cache = fns.step(params, token, cache)
    token, tokens, done, lengths, reasons = pick(t, logits, tokens, done, lengths, reasons)
    return t + 1, token, cache, tokens, done, lengths, reasons

  first = pick(0, logits, jnp.full((rows, n), pad_id, jnp.int32), limit <= 0, jnp.zeros((rows,), jnp.int32),
               jnp.zeros((rows,), jnp.int32))
  init = (jnp.ones((), jnp.int32), first[0], cache, *first[1:])
  _, _, _, tokens, _, lengths, reasons = jax.lax.while_loop(cond, body, init)
  return {"tokens": tokens, "lengths": lengths, "reasons": reasons}
