"""Putting audio features into the token sequence (spec §3.7, §8), and the host-side input check.

Audios are ordered row-major by where their placeholders occur in `input_ids`; the k-th placeholder
(id == cfg.audio_pad_id) receives the k-th valid audio frame, where audio i contributes its first
n_i rows. The splice has static shapes (no data-dependent indexing), so it runs under jit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from qwen_audio_jax.audio import lengths as audio_lengths_lib
from qwen_audio_jax.model.config import ModelConfig


class AudioPlaceholderError(ValueError):
  """input_ids and the audio inputs disagree (counts of audios, tags, placeholders, features)."""


def features_per_audio(audio_lengths, cfg: ModelConfig):
  """Rows each audio contributes to the LLM: pooled_frames(T) with the avg-pool, else T."""
  if cfg.encoder is not None and cfg.encoder.pool:
    return audio_lengths_lib.pooled_frames(audio_lengths)
  return audio_lengths


def splice_audio(embeds: jax.Array, input_ids: jax.Array, features: jax.Array, n_valid: jax.Array,
                 pad_id: int) -> jax.Array:
  """embeds [B, S, D]; features [N, n_max, D]; n_valid [N] -> embeds with placeholders replaced."""
  b, s, d = embeds.shape
  n_audio, n_max, _ = features.shape
  n_valid = jnp.asarray(n_valid, jnp.int32)
  is_pad = (input_ids == pad_id).reshape(-1)
  rank = jnp.cumsum(is_pad.astype(jnp.int32)) - 1  # k for the k-th placeholder
  ends = jnp.cumsum(n_valid)
  audio = jnp.clip(jnp.searchsorted(ends, rank, side="right"), 0, n_audio - 1)
  frame = jnp.clip(rank - (ends[audio] - n_valid[audio]), 0, n_max - 1)
  rows = features[audio, frame].astype(embeds.dtype)  # [B*S, D]
  return jnp.where(is_pad[:, None], rows, embeds.reshape(b * s, d)).reshape(b, s, d)


def overwrite_tags(embeds: jax.Array, input_ids: jax.Array, tag_table: jax.Array, start_id: int,
                   end_id: int) -> jax.Array:
  """Qwen-Audio v1: `<audio>` positions get tag_table[0] (bos), `</audio>` positions tag_table[1] (eos)."""
  table = tag_table.astype(embeds.dtype)
  embeds = jnp.where((input_ids == start_id)[..., None], table[0], embeds)
  return jnp.where((input_ids == end_id)[..., None], table[1], embeds)


def check_audio_placeholders(input_ids, audio_lengths, cfg: ModelConfig, mel_frames: int | None = None) -> None:
  """Raises AudioPlaceholderError (one line) when input_ids and the audios disagree. Host-side numpy.

  audio_lengths: T per audio (encoder frames, `audio/lengths.py`), or None when no audio is given. T = 0 marks
  an absent slot (an empty batch row or an unused audio slot of the data pipeline): no features, no span.
  mel_frames: static mel length F of the audio batch; then every T must be in [0, (F - 1) // 2 + 1].
  Checks: total placeholders == total audio features; with `<audio>`..`</audio>` tags present (always for
  Qwen-Audio v1), one start and one end tag per audio and exactly n_i placeholders inside the i-th span.
  """
  ids = np.asarray(input_ids)
  lens = np.zeros((0,), np.int64) if audio_lengths is None else np.asarray(audio_lengths, np.int64).reshape(-1)
  if mel_frames is not None:
    t_max = int(audio_lengths_lib.encoder_frames(mel_frames))
    if lens.size and (lens.min() < 0 or lens.max() > t_max):
      raise AudioPlaceholderError(f"audio_lengths (encoder frames T) {lens.tolist()} must lie in [0, {t_max}] "
                                  f"for a {mel_frames}-frame mel window")
  lens = lens[lens > 0]  # absent slots contribute nothing (splice_audio gives them 0 rows too)
  n_feat = np.asarray(features_per_audio(lens, cfg), np.int64)
  n_pad = int(np.sum(ids == cfg.audio_pad_id))
  n_start, n_end = int(np.sum(ids == cfg.audio_start_id)), int(np.sum(ids == cfg.audio_end_id))
  spans = _span_counts(ids, cfg) if n_start == n_end else None

  def fail(cause: str):
    raise AudioPlaceholderError(
        f"audio inputs disagree with input_ids ({cause}): {len(lens)} audios with {int(n_feat.sum())} features "
        f"(per audio {n_feat.tolist()}), {n_start} start tags (id {cfg.audio_start_id}), {n_end} end tags "
        f"(id {cfg.audio_end_id}), {n_pad} placeholders (id {cfg.audio_pad_id})"
        + (f", placeholders per span {spans}" if spans is not None else ""))

  if n_pad != int(n_feat.sum()):
    fail("placeholder count != feature count")
  tags_required = cfg.audio_bos_eos and len(lens) > 0
  if tags_required or n_start or n_end:
    if not n_start == n_end == len(lens):
      fail("need one start and one end tag per audio")
    if spans is None or spans != n_feat.tolist():
      fail("placeholders inside the i-th <audio>..</audio> span != features of audio i")


def _span_counts(ids: np.ndarray, cfg: ModelConfig) -> list[int] | None:
  """Placeholders inside each start..end span (row-major); None if a span is malformed or has other ids."""
  counts = []
  for row in ids.reshape(-1, ids.shape[-1]):
    starts = np.flatnonzero(row == cfg.audio_start_id)
    ends = np.flatnonzero(row == cfg.audio_end_id)
    if len(starts) != len(ends):
      return None
    for a, e in zip(starts, ends):
      inside = row[a + 1:e]
      if e <= a or np.any(inside != cfg.audio_pad_id):
        return None
      counts.append(int(inside.size))
  return counts
