"""Pure, jit-able decoding functions for Whisper checkpoints (family "whisper" with `cfg.text_decoder`).

  logits, cache = prefill(params, cfg, mel, prompt_ids, max_length)   # encode once, run the prompt
  logits, cache = step(params, cfg, tokens, cache)                     # one token per row
  cache = cache.take(indices)                                          # beam search: reorder rows

Inputs: mel [N, n_mels, 3000] — each clip's log-mel padded to the 30 s window, as openai/transformers
Whisper do: the decoder attends over all 1500 encoder frames whatever the clip's length, so there are no
per-clip lengths and a row's result does not depend on the batch. prompt_ids [B, S]: B = N * G token rows,
rows r*G .. r*G + G - 1 belonging to clip r (G = 1 for greedy/sampling; beam search may prefill one row
per clip and widen with `take`). All prompts have the same length S (Whisper prompts
`<|startoftranscript|><|lang|><|task|>[<|notimestamps|>]` do), so nothing is padded. Logits are fp32;
the cache holds the compute dtype (cfg.dtype).

`cfg` must be hashable and static under jit (it is a frozen dataclass), as must `max_length`.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from qwen_audio_jax.model.audio_encoder import AudioEncoder
from qwen_audio_jax.model.config import ModelConfig
from qwen_audio_jax.model.whisper_decoder import WhisperDecoder


@flax.struct.dataclass
class WhisperCache:
  """Decoder state between steps. Rows are grouped by clip (see module doc)."""

  self_k: jax.Array  # [L, B, S_max, H, Dh] self-attention keys of the tokens so far
  self_v: jax.Array  # [L, B, S_max, H, Dh]
  cross_k: jax.Array  # [L, N, T, H, Dh] cross-attention keys of each clip's encoder output (T = 1500)
  cross_v: jax.Array  # [L, N, T, H, Dh]
  index: jax.Array  # int32 scalar: tokens written per row = position of the next token

  @property
  def max_length(self) -> int:
    return self.self_k.shape[2]

  @property
  def batch_size(self) -> int:
    return self.self_k.shape[1]

  def take(self, indices: jax.Array) -> "WhisperCache":
    """The cache whose row i is row indices[i] of this one (beam search reorders/duplicates rows).

    Cross keys/values stay one per clip, so `indices` must keep rows grouped by clip: with N clips and
    B' = len(indices) new rows, new row i must come from a row of clip i // (B' / N) — as beam search
    does (widen with repeat(arange(N), k), then reorder within each clip's beams). Checked when
    `indices` is concrete; under jit it is the caller's contract.
    """
    n = self.cross_k.shape[1]
    if indices.ndim != 1 or indices.shape[0] % n:
      raise ValueError(f"WhisperCache.take: indices must be [B'] with B' a multiple of the {n} clips, "
                       f"got shape {indices.shape}")
    if not isinstance(indices, jax.core.Tracer):
      got = np.asarray(indices) // (self.batch_size // n)
      want = np.arange(indices.shape[0]) // (indices.shape[0] // n)
      if not np.array_equal(got, want):
        raise ValueError("WhisperCache.take: indices move rows between clips (row i must come from clip "
                         f"i // {indices.shape[0] // n}); got clips {got.tolist()}")
    gather = lambda a: jnp.take(a, indices, axis=1)
    return self.replace(self_k=gather(self.self_k), self_v=gather(self.self_v))


def _kv_shape(cfg: ModelConfig, rows: int, length: int) -> tuple[int, ...]:
  t = cfg.text_decoder
  return (t.n_layers, rows, length, t.n_heads, t.head_dim)


def cache_bytes(cfg: ModelConfig, batch: int, max_length: int, dtype=None, rows_per_clip: int = 1) -> int:
  """Bytes of a WhisperCache: self K/V for `batch` rows of `max_length` slots + cross K/V for
  batch / rows_per_clip clips of n_ctx encoder frames, in `dtype` (default cfg.dtype)."""
  item = jnp.dtype(dtype or cfg.dtype).itemsize
  self_kv = 2 * int(np.prod(_kv_shape(cfg, batch, max_length)))
  cross_kv = 2 * int(np.prod(_kv_shape(cfg, batch // rows_per_clip, cfg.encoder.n_ctx)))
  return (self_kv + cross_kv) * item + 4


def check_inputs(cfg: ModelConfig, mel_shape, prompt_shape, max_length: int) -> None:
  """One-line ValueError for inputs Whisper decoding cannot take (shapes only; runs before compiling)."""
  if cfg.family != "whisper" or cfg.text_decoder is None:
    raise ValueError(f"whisper_decode: needs a Whisper checkpoint with its text decoder (family {cfg.family!r}, "
                     f"text_decoder {'absent' if cfg.text_decoder is None else 'present'}); reconvert the "
                     "Whisper checkpoint with this version to get the decoder")
  enc, ctx = cfg.encoder, cfg.text_decoder.n_ctx
  if len(mel_shape) != 3 or tuple(mel_shape[1:]) != (enc.n_mels, enc.n_frames):
    raise ValueError(f"whisper_decode: mel must be [N, {enc.n_mels}, {enc.n_frames}] (the 30 s window, "
                     f"padded), got {list(mel_shape)}")
  if len(prompt_shape) != 2 or prompt_shape[1] < 1 or prompt_shape[0] % mel_shape[0]:
    raise ValueError(f"whisper_decode: prompt_ids must be [B, S>=1] with B a multiple of the {mel_shape[0]} "
                     f"clips, got {list(prompt_shape)}")
  if not prompt_shape[1] <= max_length <= ctx:
    raise ValueError(f"whisper_decode: max_length {max_length} must lie in [prompt length {prompt_shape[1]}, "
                     f"{ctx}] (the decoder has {ctx} positions)")


def _check_ids(cfg: ModelConfig, ids) -> None:
  if not isinstance(ids, jax.core.Tracer):
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= cfg.text_decoder.vocab_size):
      raise ValueError(f"whisper_decode: token ids must lie in [0, {cfg.text_decoder.vocab_size}), "
                       f"got {int(ids.min())}..{int(ids.max())}")


def encode(params, cfg: ModelConfig, mel: jax.Array) -> jax.Array:
  """mel [N, n_mels, 3000] -> encoder output [N, 1500, D] (no masking: Whisper's full window)."""
  return AudioEncoder(cfg).apply({"params": params["audio_encoder"]}, jnp.asarray(mel))


def _decoder(params, cfg, *args, **kw):
  return WhisperDecoder(cfg).apply({"params": params["text_decoder"]}, *args, **kw)


def forward_logits(params, cfg: ModelConfig, mel: jax.Array, ids: jax.Array) -> jax.Array:
  """Teacher forcing: fp32 logits [B, S, V] of every position of ids [B, S] (no cache)."""
  check_inputs(cfg, np.shape(mel), np.shape(ids), np.shape(ids)[1])
  _check_ids(cfg, ids)
  logits, _, _ = _decoder(params, cfg, jnp.asarray(ids, jnp.int32), encode(params, cfg, mel))
  return logits


def prefill(params, cfg: ModelConfig, mel: jax.Array, prompt_ids: jax.Array,
            max_length: int) -> tuple[jax.Array, WhisperCache]:
  """Encodes the audio, computes each layer's cross keys/values once, runs the prompt into a cache of
  `max_length` slots (prompt + generated tokens, <= n_ctx = 448). Returns (fp32 logits [B, V] of the last
  prompt position, cache)."""
  check_inputs(cfg, np.shape(mel), np.shape(prompt_ids), max_length)
  _check_ids(cfg, prompt_ids)
  dtype = jnp.dtype(cfg.dtype)
  logits, (k, v), (ck, cv) = _decoder(params, cfg, jnp.asarray(prompt_ids, jnp.int32), encode(params, cfg, mel),
                                      keep_kv=True, output="last_logits")
  empty = jnp.zeros(_kv_shape(cfg, np.shape(prompt_ids)[0], max_length), dtype)
  cache = WhisperCache(self_k=_store(empty, k, 0), self_v=_store(empty, v, 0), cross_k=ck.astype(dtype),
                       cross_v=cv.astype(dtype), index=jnp.asarray(np.shape(prompt_ids)[1], jnp.int32))
  return logits, cache


def _store(cache: jax.Array, new: jax.Array, index) -> jax.Array:
  """Writes new [L, B, S, H, Dh] at slot `index` (in place when the cache buffer is donated / a loop carry)."""
  return jax.lax.dynamic_update_slice(cache, new.astype(cache.dtype), (0, 0, index, 0, 0))


def step(params, cfg: ModelConfig, tokens: jax.Array, cache: WhisperCache) -> tuple[jax.Array, WhisperCache]:
  """Feeds one token per row (tokens [B]); returns (fp32 logits [B, V] for the next token, cache).

  The cache must have room (index < max_length): checked when the index is concrete; under jit the
  caller stops at max_length (a full cache would otherwise overwrite its last slot). The caches are read
  once and the new keys/values written in place when the cache is a loop carry or donated (in a Python
  loop: jax.jit(step, static_argnames="cfg", donate_argnames="cache")).
  """
  if not isinstance(cache.index, jax.core.Tracer) and int(cache.index) >= cache.max_length:
    raise ValueError(f"whisper_decode.step: cache full ({int(cache.index)} of {cache.max_length} slots)")
  _check_ids(cfg, tokens)
  logits, (k, v), _ = _decoder(params, cfg, jnp.asarray(tokens, jnp.int32)[:, None], None,
                               self_kv=(cache.self_k, cache.self_v), cross_kv=(cache.cross_k, cache.cross_v),
                               index=cache.index, keep_kv=True, output="last_logits")
  return logits, cache.replace(self_k=_store(cache.self_k, k, cache.index),
                               self_v=_store(cache.self_v, v, cache.index), index=cache.index + 1)
