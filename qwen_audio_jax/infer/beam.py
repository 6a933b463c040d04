"""Beam search on device, step for step as transformers' vectorised `_beam_search` (v4.50+ / v5).

Per step: log-softmax of every beam's logits plus its running score, the top K2 = max(2, 1 + #eos) × K
candidates over beams × vocabulary, candidates that end (an end id, a stop sequence, or the row's
token limit) offered to the finished set with score sum_logprobs / length ** length_penalty (only
those among the top K), the best K unfinished continuing; the cache rows follow their beams. The
prompt is prefilled once per row and its cache (audio included) copied to the K beams. Stopping
(`early_stopping` False / True / "never") uses transformers' heuristic, per row.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qwen_audio_jax.infer import logits as logits_lib
from qwen_audio_jax.infer import stopping
from qwen_audio_jax.infer.decode_fns import DecodeFns
from qwen_audio_jax.infer.search import cache_length
from qwen_audio_jax.infer.settings import DecodeSettings

BIG = 1.0e9


def _gather(x: jax.Array, idx: jax.Array) -> jax.Array:
  """x [B, M, ...] rows picked by idx [B, J] along axis 1."""
  idx = idx.reshape(idx.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, idx, axis=1)


def decode(fns: DecodeFns, settings: DecodeSettings, params, batch: dict, ctrl: dict, pad_id: int) -> dict:
  """Beam search for a batch (inside jit). Same inputs and outputs as `search.decode`, plus "scores"."""
  k, n = settings.num_beams, settings.buffer_tokens
  k2 = max(2, 1 + len(settings.eos_ids)) * k
  early = settings.early_stopping
  lp = ctrl["length_penalty"]
  limit = batch["limit"]
  b = limit.shape[0]
  logits, cache = fns.prefill(params, batch, cache_length(fns, batch["input_ids"].shape[1], n))
  expand = jnp.repeat(jnp.arange(b), k)
  cache, logits = fns.take(cache, expand), logits[expand]
  top_mask = jnp.arange(k2) < k

  def cond(s):
    t, heur, is_fin, hits = s[0], s[8], s[7], s[9]
    open_beam = ~(jnp.all(is_fin) & (early is True))
    return (t < n) & jnp.any(heur) & open_beam & ~jnp.all(hits)

  def body(s):
    t, logits, cache, run_seq, run_scores, seqs, scores, is_fin, heur, _, fin_len = s
    vocab = logits.shape[-1]
    logp = logits_lib.suppress(jax.nn.log_softmax(logits, axis=-1), ctrl.get("suppress"),
                               ctrl.get("begin_suppress"), t)
    logp = (logp.reshape(b, k, vocab) + run_scores[:, :, None]).reshape(b, k * vocab)
    top_vals, top_idx = jax.lax.top_k(logp, k2)
    src, token = top_idx // vocab, (top_idx % vocab).astype(jnp.int32)
    cand = _gather(run_seq, src).at[:, :, t].set(token)
    ends = stopping.hits_stop(cand.reshape(b * k2, n), t, settings.eos_ids, settings.stop_sequences)
    hits = ends.reshape(b, k2) | (t + 1 >= limit[:, None])
    # Unfinished candidates continue.
    run_vals = top_vals + hits.astype(jnp.float32) * -BIG
    keep = jax.lax.top_k(run_vals, k)[1]
    run_seq, run_scores, parent = _gather(cand, keep), _gather(run_vals, keep), _gather(src, keep)
    # Finished candidates among the top K join the finished set if they beat it.
    just = hits & top_mask[None, :]
    fin_vals = top_vals / ((t + 1).astype(jnp.float32) ** lp)
    fin_vals += (jnp.all(is_fin, axis=-1, keepdims=True) & (early is True)).astype(jnp.float32) * -BIG
    fin_vals += (~heur[:, None]).astype(jnp.float32) * -BIG
    fin_vals += (~just).astype(jnp.float32) * -BIG
    best = jax.lax.top_k(jnp.concatenate([scores, fin_vals], axis=1), k)[1]
    seqs = _gather(jnp.concatenate([seqs, cand], axis=1), best)
    scores = _gather(jnp.concatenate([scores, fin_vals], axis=1), best)
    is_fin = _gather(jnp.concatenate([is_fin, just], axis=1), best)
    fin_len = _gather(jnp.concatenate([fin_len, jnp.full((b, k2), t + 1, jnp.int32)], axis=1), best)
    # The early-stop heuristic (transformers' `_check_early_stop_heuristic`).
    t1 = t + 1
    hyp_len = jnp.where(lp > 0, ctrl["max_new_tokens"], t1) if early == "never" else t1
    hyp_len = hyp_len.astype(jnp.float32)
    best_possible = run_scores[:, :1] / hyp_len ** lp
    worst = jnp.where(is_fin, jnp.min(scores, axis=1, keepdims=True), -BIG)
    heur = heur & jnp.any(best_possible > worst, axis=-1)
    rows = (jnp.arange(b)[:, None] * k + parent).reshape(-1)
    finishing = ~((t1 < n) & jnp.any(heur) & ~(jnp.all(is_fin) & (early is True)) & ~jnp.all(hits))
    logits, cache = jax.lax.cond(
        finishing, lambda: (logits, cache),
        lambda: fns.step(params, run_seq[:, :, t].reshape(-1), fns.take(cache, rows)))
    return t1, logits, cache, run_seq, run_scores, seqs, scores, is_fin, heur, hits, fin_len

  run_scores = jnp.zeros((b, k), jnp.float32).at[:, 1:].set(-BIG)
  init = (jnp.zeros((), jnp.int32), logits, cache, jnp.full((b, k, n), pad_id, jnp.int32), run_scores,
          jnp.full((b, k, n), pad_id, jnp.int32), jnp.full((b, k), -BIG, jnp.float32), jnp.zeros((b, k), bool),
          jnp.ones((b,), bool), jnp.zeros((b, k2), bool), jnp.zeros((b, k), jnp.int32))
  out = jax.lax.while_loop(cond, body, init)
  seqs, scores, fin_len = out[5][:, 0], out[6][:, 0], out[10][:, 0]
  tokens = jnp.where(jnp.arange(n)[None, :] < fin_len[:, None], seqs, pad_id)
  last = jnp.take_along_axis(tokens, jnp.maximum(fin_len - 1, 0)[:, None], axis=1)[:, 0]
  ended = jnp.zeros((b,), bool)
  for i in settings.eos_ids:
    ended |= last == i
  if settings.stop_sequences:
    per_row = jax.vmap(lambda row, t: stopping.hits_stop(row[None], t, (), settings.stop_sequences)[0])
    ended |= per_row(tokens, jnp.maximum(fin_len - 1, 0)) & (fin_len > 0)
  reasons = stopping.finish_reason(ended, jnp.zeros((b,), bool), fin_len, limit, ctrl["max_new_tokens"])
  reasons = jnp.where(limit <= 0, stopping.RUNNING, reasons)
  return {"tokens": tokens, "lengths": fin_len, "reasons": reasons, "scores": scores}
