"""What the decode loops need from a model: prefill, one-token step, and cache row gathering.

`DecodeFns` hides the model family: the audio LLMs (Qwen-Audio, Qwen2-Audio, text-only Qwen) run
`Model` with a `KVCache`; encoder-decoder Whisper plugs in its own prefill/step the same way.
A batch is a dict of arrays: input_ids [B, S] (left padded), attention_mask [B, S], and for audio
models audio_mel [N, n_mels, F] + audio_lengths [N].
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from qwen_audio_jax.model import Model, ModelConfig, init_cache
from qwen_audio_jax.model.kv_cache import KVCache


@dataclasses.dataclass(frozen=True)
class DecodeFns:
  """prefill(params, batch, max_length) -> (fp32 logits [B, V] of the last prompt column, cache);
  step(params, tokens [B], cache) -> (fp32 logits [B, V], cache);
  take(cache, rows [B']) -> cache with those batch rows (beam search);
  cache_bytes(rows, max_length, beams) -> bytes of the cache for `rows` prompts decoded with `beams` each;
  max_context: the model's longest sequence (prompt + new tokens), None = unlimited;
  padded_prompts: whether prompts of a batch may differ in length (left padding) — Whisper's may not."""

  prefill: Callable[[Any, dict, int], tuple[jax.Array, Any]]
  step: Callable[[Any, jax.Array, Any], tuple[jax.Array, Any]]
  take: Callable[[Any, jax.Array], Any]
  cache_bytes: Callable[[int, int, int], int]
  max_context: int | None = None
  padded_prompts: bool = True


def llm_decode_fns(cfg: ModelConfig) -> DecodeFns:
  """DecodeFns of the decoder-only families (audio is encoded and spliced during prefill)."""
  model = Model(cfg)

  def prefill(params, batch, max_length):
    ids = batch["input_ids"]
    cache = init_cache(cfg, ids.shape[0], max_length, dtype=cfg.dtype)
    return model.apply({"params": params}, ids, batch["attention_mask"], batch.get("audio_mel"),
                       batch.get("audio_lengths"), cache=cache, output="last_logits")

  def step(params, tokens, cache):
    ids = tokens[:, None]
    return model.apply({"params": params}, ids, jnp.ones(ids.shape, jnp.int32), cache=cache,
                       output="last_logits")

  return DecodeFns(prefill=prefill, step=step, take=lambda cache, rows: cache.take(rows),
                   cache_bytes=lambda rows, length, beams: cache_bytes(cfg, rows * beams, length))


def whisper_decode_fns(cfg: ModelConfig) -> DecodeFns:
  """DecodeFns of Whisper (encoder-decoder): the audio is encoded and the cross keys/values computed once
  per clip at prefill; prompts of a batch have equal lengths (`<|startoftranscript|><|lang|><|task|>...`)."""
  from qwen_audio_jax.model import whisper_decode  # pylint: disable=import-outside-toplevel

  def prefill(params, batch, max_length):
    return whisper_decode.prefill(params, cfg, batch["audio_mel"], batch["input_ids"], max_length)

  def step(params, tokens, cache):
    return whisper_decode.step(params, cfg, tokens, cache)

  return DecodeFns(prefill=prefill, step=step, take=lambda cache, rows: cache.take(rows),
                   cache_bytes=lambda rows, length, beams: whisper_decode.cache_bytes(
                       cfg, rows * beams, length, rows_per_clip=beams),
                   max_context=cfg.text_decoder.n_ctx, padded_prompts=False)


def decode_fns_for(cfg: ModelConfig) -> DecodeFns:
  return whisper_decode_fns(cfg) if cfg.family == "whisper" else llm_decode_fns(cfg)


def cache_bytes(cfg: ModelConfig, rows: int, max_length: int) -> int:
  """Bytes of the LLM KV cache of `rows` sequences of `max_length` tokens (keys + values)."""
  d = cfg.decoder
  return 2 * d.n_layers * rows * max_length * d.n_kv_heads * d.head_dim * jnp.dtype(cfg.dtype).itemsize


__all__ = ["DecodeFns", "KVCache", "cache_bytes", "decode_fns_for", "llm_decode_fns", "whisper_decode_fns"]
