"""MoWE-Audio: a mixture of weak encoders beside the base audio encoder (arXiv 2409.06635; config.MoweConfig).

For the clips' base features f [N, T', d_enc] (pooled, before the projector) and mel [N, n_mels, F]:
  e_k = WeakEncoder_k(mel) [N, T', d_k]           every weak encoder runs (dense; pooled like the base)
  P_k = e_k @ W_k [N, T', D]                     a bias-free projection per weak encoder to the LLM width
  w   = softmax(router_logits) [K]                data-independent router (same for every clip)
  p   = softmax(mean_valid(f) @ G + g) [N, K]     data-dependent router on the masked mean of f
  m   = top-k(p) one-hot [N, K] (exactly k ones); d = p·m   (Switch-style: the selected probabilities,
        not renormalised, so the next-token loss reaches the gate even with k = 1)
  delta = sum_k (w_k + d_nk) P_nk                ("both"; "independent": w only, "dependent": d only)
The model adds delta to audio_projector(f): that is the projection of the concatenation [f, weighted weak
embeddings] with a block kernel, written so that a zero weak path leaves the base output bit for bit.
Every quantity is per clip (no batch statistics); the load-balancing loss over the batch is computed in
the training loss only (`aux_loss`) from the sown `intermediates` ("mowe_probs", "mowe_mask").
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from qwen_audio_jax.model.audio_encoder import AudioEncoder
from qwen_audio_jax.model.config import ModelConfig
from qwen_audio_jax.model.layers import Linear, partitioned, param_dtype

ROUTERS = ("both", "independent", "dependent")


def enabled(cfg: ModelConfig) -> bool:
  return cfg.mowe is not None and len(cfg.mowe.weak) > 0


def weak_config(cfg: ModelConfig, k: int) -> ModelConfig:
  """The ModelConfig the k-th weak encoder runs under: its EncoderConfig (pooled), no MoWE, no PETL."""
  return cfg.replace(encoder=dataclasses.replace(cfg.mowe.weak[k], pool=True), mowe=None, encoder_petl=None)


def check(cfg: ModelConfig) -> None:
  """The pool must be time-aligned with the base encoder and the router settings valid."""
  if not enabled(cfg):
    return
  m, base = cfg.mowe, cfg.encoder
  if cfg.family not in ("qwen-audio", "qwen2-audio"):
    raise ValueError(f"ModelConfig.mowe is for the audio LLM families, not {cfg.family!r}")
  if m.routers not in ROUTERS:
    raise ValueError(f"ModelConfig.mowe.routers must be one of {ROUTERS}, got {m.routers!r}")
  if not 1 <= m.top_k <= len(m.weak):
    raise ValueError(f"ModelConfig.mowe.top_k={m.top_k} must be in [1, {len(m.weak)}] (the pool size)")
  for k, w in enumerate(m.weak):
    for field in ("n_mels", "n_ctx", "padding"):
      if getattr(w, field) != getattr(base, field):
        raise ValueError(f"ModelConfig.mowe.weak[{k}].{field}={getattr(w, field)!r} must equal the base encoder's "
                         f"{getattr(base, field)!r} (weak frames are aligned with the base frames)")
    if w.d_model % w.n_heads:
      raise ValueError(f"ModelConfig.mowe.weak[{k}]: d_model {w.d_model} not divisible by n_heads {w.n_heads}")


def valid_frames(n_valid: jax.Array | None, n_frames: int, n_clips: int) -> jax.Array:
  """[N, T'] float mask of each clip's valid pooled frames (all valid without lengths)."""
  if n_valid is None:
    return jnp.ones((n_clips, n_frames), jnp.float32)
  return (jnp.arange(n_frames)[None, :] < jnp.asarray(n_valid)[:, None]).astype(jnp.float32)


class Mowe(nn.Module):
  """(f [N, T', d_enc], mel, lengths, n_valid [N]) -> delta [N, T', D] added to the projected base features."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, features, mel, lengths, n_valid):
    cfg, m = self.cfg, self.cfg.mowe
    n_weak, d_llm = len(m.weak), cfg.decoder.d_model
    projected = []
    for k in range(n_weak):
      e = AudioEncoder(weak_config(cfg, k), name=f"weak_{k}")(mel, lengths)
      if e.shape[1] != features.shape[1]:
        raise ValueError(f"mowe: weak encoder {k} gives {e.shape[1]} frames, the base {features.shape[1]}")
      projected.append(Linear(d_llm, ("audio_embed", "embed"), cfg, use_bias=False, name=f"proj_{k}")(e))
    stacked = jnp.stack(projected, axis=1)  # [N, K, T', D]
    weights = jnp.zeros((features.shape[0], n_weak), jnp.float32)
    if m.routers in ("both", "independent"):
      logits = self.param("router_logits", partitioned(nn.initializers.zeros_init(), ("norm",)), (n_weak,),
                          param_dtype(cfg))
      w = jax.nn.softmax(logits.astype(jnp.float32))
      self.sow("intermediates", "mowe_weights", w)
      weights = weights + w[None, :]
    if m.routers in ("both", "dependent"):
      valid = valid_frames(n_valid, features.shape[1], features.shape[0])
      pooled = jnp.sum(features.astype(jnp.float32) * valid[:, :, None], axis=1) / jnp.maximum(
          jnp.sum(valid, axis=1, keepdims=True), 1.0)
      gate = Linear(n_weak, ("audio_embed", "norm"), cfg, out_dtype=jnp.float32, name="gate")(pooled)
      probs = jax.nn.softmax(gate.astype(jnp.float32), axis=-1)
      mask = top_k_mask(probs, m.top_k)
      self.sow("intermediates", "mowe_probs", probs)
      self.sow("intermediates", "mowe_mask", mask)
      weights = weights + probs * mask
    return jnp.einsum("nk,nktd->ntd", weights.astype(stacked.dtype), stacked)


def top_k_mask(probs: jax.Array, k: int) -> jax.Array:
  """[N, K] one-hot float mask of the k largest entries per row (ties: lower index first)."""
  _, idx = jax.lax.top_k(probs, k)
  return jnp.sum(jax.nn.one_hot(idx, probs.shape[-1], dtype=jnp.float32), axis=-2)


def aux_loss(probs: jax.Array, mask: jax.Array, row_weight: jax.Array | None = None) -> jax.Array:
  """Switch-Transformer load balance of the data-dependent router over the batch's clips:
  K · sum_k f_k · P_k, f_k = share of the selections that went to encoder k, P_k = mean router probability
  (1.0 when balanced, K when collapsed). `row_weight` [N] drops padding clips (0) from both means."""
  n, k = probs.shape
  wts = jnp.ones((n,), jnp.float32) if row_weight is None else row_weight.astype(jnp.float32)
  denom = jnp.maximum(jnp.sum(wts), 1.0)
  share = jnp.sum(mask * wts[:, None], axis=0) / jnp.maximum(jnp.sum(mask * wts[:, None]), 1.0)
  mean_p = jnp.sum(probs * wts[:, None], axis=0) / denom
  return k * jnp.sum(share * mean_p)


def router_stats(intermediates, n_weak: int, row_weight: jax.Array | None = None,
                 task_index: jax.Array | None = None, n_tasks: int = 0) -> dict[str, jax.Array]:
  """Values for the logs from the sown router outputs (`Model.apply(..., mutable=["intermediates"])`):
  "mowe/aux_loss", per weak encoder k "mowe/usage/weak_k" (share of clips whose top-k holds k),
  "mowe/prob/weak_k" (mean data-dependent probability) and "mowe/weight/weak_k" (data-independent weight).
  With `task_index` [N] (a task id per clip, -1 for none) also the per-task counts "mowe/task_selected"
  [n_tasks, K] (clips of task t whose top-k holds k) and "mowe/task_clips" [n_tasks]; counts, not shares,
  so that a logging window sums them before dividing (`train.metrics.task_usage`)."""
  mine = intermediates.get("mowe", {})
  out = {}
  if "mowe_probs" in mine:
    probs, mask = mine["mowe_probs"][0], mine["mowe_mask"][0]
    wts = jnp.ones(probs.shape[:1], jnp.float32) if row_weight is None else row_weight.astype(jnp.float32)
    denom = jnp.maximum(jnp.sum(wts), 1.0)
    out["mowe/aux_loss"] = aux_loss(probs, mask, wts)
    usage, mean_p = (jnp.sum(x * wts[:, None], axis=0) / denom for x in (mask, probs))
    for k in range(n_weak):
      out[f"mowe/usage/weak_{k}"], out[f"mowe/prob/weak_{k}"] = usage[k], mean_p[k]
    if task_index is not None and n_tasks:
      per_task = jax.nn.one_hot(task_index, n_tasks, dtype=jnp.float32) * wts[:, None]  # -1 → a zero row
      out["mowe/task_selected"] = per_task.T @ mask
      out["mowe/task_clips"] = jnp.sum(per_task, axis=0)
  if "mowe_weights" in mine:
    for k in range(n_weak):
      out[f"mowe/weight/weak_{k}"] = mine["mowe_weights"][0][k]
  return out
