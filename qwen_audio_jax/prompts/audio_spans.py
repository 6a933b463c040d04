"""Audio placeholders in token ids: expansion to one id per audio token, and validation.

Counts `n` per audio come from the caller (`qwen_audio_jax.audio.lengths.audio_tokens(samples)`).
* Qwen-Audio ("closed_tag"): `<audio>` PATH-TOKENS `</audio>` → `<audio>` + pad × n + `</audio>`
  (spec §3.7/§4.3; the whole span, tags included, is overwritten by [bos, n frames, eos]).
* Qwen2-Audio ("placeholder"): one `<|AUDIO|>` → `<|AUDIO|>` × n, wrapped in
  `<|audio_bos|>`…`<|audio_eos|>` when neither is there (older HF processor behaviour).
Any disagreement between audios, placeholders and feature counts is an `AudioMismatchError`.
"""

from __future__ import annotations

import re
from typing import Sequence

from qwen_audio_jax.audio.lengths import MAX_AUDIO_TOKENS
from qwen_audio_jax.tokenizer.base import Tokenizer

_AUDIO_TAG_RE = re.compile(r"<audio>(.*?)</audio>", re.DOTALL)


class AudioMismatchError(ValueError):
  """Audios, placeholders in the ids and audio-feature counts disagree."""


def _mismatch(where: str, n_audios: int, spans: Sequence[int], counts: Sequence[int]) -> AudioMismatchError:
  return AudioMismatchError(
      f"{where}: {n_audios} audio(s) but {len(spans)} placeholder span(s) of lengths {list(spans)[:8]} "
      f"for feature counts {list(counts)[:8]}")


def list_audio_paths(text: str) -> list[str]:
  """Paths/URLs between `<audio>` and `</audio>` in order (the caller loads them; we never do)."""
  return _AUDIO_TAG_RE.findall(text)


def _validate_counts(where: str, audio_tokens: Sequence[int]) -> list[int]:
  counts = [int(n) for n in audio_tokens]
  for i, n in enumerate(counts):
    if not 1 <= n <= MAX_AUDIO_TOKENS:
      raise AudioMismatchError(
          f"{where}: audio {i} has {n} audio tokens; expected 1..{MAX_AUDIO_TOKENS} "
          "(compute it with qwen_audio_jax.audio.lengths.audio_tokens)")
  return counts


def _closed_spans(ids: Sequence[int], tok: Tokenizer, where: str) -> list[tuple[int, int]]:
  """(start, end) positions of each `<audio>`…`</audio>` pair (inclusive)."""
  spans, start = [], None
  for pos, token_id in enumerate(ids):
    if token_id == tok.audio_start_id:
      if start is not None:
        raise AudioMismatchError(f"{where}: audio start tag at {pos} inside the span opened at {start}")
      start = pos
    elif token_id == tok.audio_end_id:
      if start is None:
        raise AudioMismatchError(f"{where}: audio end tag at {pos} without a start tag")
      spans.append((start, pos))
      start = None
  if start is not None:
    raise AudioMismatchError(f"{where}: audio start tag at {start} is never closed (truncated prompt?)")
  return spans


def _pad_runs(ids: Sequence[int], tok: Tokenizer) -> list[tuple[int, int]]:
  """(start, end) of each maximal run of audio pad ids (end exclusive)."""
  runs, pos = [], 0
  while pos < len(ids):
    if ids[pos] == tok.audio_pad_id:
      end = pos
      while end < len(ids) and ids[end] == tok.audio_pad_id:
        end += 1
      runs.append((pos, end))
      pos = end
    else:
      pos += 1
  return runs


def count_audio_slots(ids: Sequence[int], tokenizer: Tokenizer) -> int:
  """Number of audios the ids refer to (closed tag pairs, or runs of `<|AUDIO|>`)."""
  ids = [int(i) for i in ids]
  if tokenizer.family.audio_layout == "closed_tag":
    return len(_closed_spans(ids, tokenizer, "count_audio_slots"))
  return len(_pad_runs(ids, tokenizer))


def expand_audio(ids: Sequence[int] | str, audio_tokens: Sequence[int], tokenizer: Tokenizer) -> list[int]:
  """Ids (or text, encoded with all specials) with each audio's placeholder expanded to n ids."""
  if isinstance(ids, str):
    ids = tokenizer.encode(ids, allowed_special="all")
  ids = [int(i) for i in ids]
  counts = _validate_counts("expand_audio", audio_tokens)
  if tokenizer.family.audio_layout == "closed_tag":
    spans = _closed_spans(ids, tokenizer, "expand_audio")
    if len(spans) != len(counts):
      raise _mismatch("expand_audio", len(counts), [b - a + 1 for a, b in spans], counts)
    out, prev = [], 0
    start, pad, end = tokenizer.audio_start_id, tokenizer.audio_pad_id, tokenizer.audio_end_id
    for (a, b), n in zip(spans, counts):
      out += ids[prev:a] + [start] + [pad] * n + [end]
      prev = b + 1
    return out + ids[prev:]
  return _expand_placeholders(ids, counts, tokenizer)


def _expand_placeholders(ids: list[int], counts: list[int], tok: Tokenizer) -> list[int]:
  runs = _pad_runs(ids, tok)
  if len(runs) != len(counts):
    raise _mismatch("expand_audio", len(counts), [b - a for a, b in runs], counts)
  out, prev = [], 0
  for (a, b), n in zip(runs, counts):
    if b - a not in (1, n):
      raise _mismatch("expand_audio", len(counts), [e - s for s, e in runs], counts)
    has_bos = a > 0 and ids[a - 1] == tok.audio_start_id
    has_eos = b < len(ids) and ids[b] == tok.audio_end_id
    if has_bos != has_eos:
      raise AudioMismatchError(
          f"expand_audio: audio placeholder at {a} has {'only bos' if has_bos else 'only eos'}; "
          "give both <|audio_bos|> and <|audio_eos|> or neither")
    wrap = not has_bos
    out += ids[prev:a] + [tok.audio_start_id] * wrap + [tok.audio_pad_id] * n + [tok.audio_end_id] * wrap
    prev = b
  return out + ids[prev:]


def check_audio_spans(ids: Sequence[int], audio_tokens: Sequence[int], tokenizer: Tokenizer) -> None:
  """Raise unless the (expanded) ids hold exactly one span of n_i pads per audio, in order.

  Call it right before the model: it catches spans cut by truncation and feature/placeholder drift.
  """
  ids = [int(i) for i in ids]
  counts = [int(n) for n in audio_tokens]
  runs = _pad_runs(ids, tokenizer)
  lengths = [b - a for a, b in runs]
  if tokenizer.family.audio_layout == "closed_tag":
    spans = _closed_spans(ids, tokenizer, "check_audio_spans")
    inside = [(a + 1, b) for a, b in spans]
    if inside != runs:
      raise _mismatch("check_audio_spans", len(counts), lengths, counts)
  else:
    for a, b in runs:
      wrapped = 0 < a and b < len(ids)
      if not (wrapped and ids[a - 1] == tokenizer.audio_start_id and ids[b] == tokenizer.audio_end_id):
        raise AudioMismatchError(f"check_audio_spans: audio span at {a} is not wrapped in audio bos/eos")
  if lengths != counts:
    raise _mismatch("check_audio_spans", len(counts), lengths, counts)
