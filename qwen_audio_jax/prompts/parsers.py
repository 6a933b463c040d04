"""Parsers of model outputs: SRWT word timestamps, note analysis (MNA) tags, chat/base answers."""

from __future__ import annotations

import re
from typing import Sequence

from qwen_audio_jax.tokenizer.base import Tokenizer
from qwen_audio_jax.tokenizer.special_tokens import TIME_TOKEN_RE, time_token

SILENCE = "<|sil|>"
_TAG_RE = re.compile(r"<\|.*?\|>")


def parse_word_timestamps(text: str, keep_empty: bool = False) -> list[dict]:
  """`<|t0|>w1<|t1|>w2<|t2|>…` → [{word, start, end}] (SRWT, spec §5).

  The text between consecutive time tokens is one word (kept verbatim; `<|sil|>` is a word, as in
  evaluate_srwt.py); boundaries are shared. Nothing between two time tokens means a gap, not a word,
  unless `keep_empty` (evaluate_srwt.py's `re.split(...)[1:-1]` keeps such '' words: the AAS recipe
  passes True). Text before the first / after the last time token (task tags, eod) is ignored.
  """
  times = list(TIME_TOKEN_RE.finditer(text))
  words = []
  for left, right in zip(times, times[1:]):
    word = text[left.end():right.start()]
    if word or keep_empty:
      words.append({"word": word, "start": float(left.group(1)), "end": float(right.group(1))})
  return words


def format_word_timestamps(words: Sequence[dict]) -> str:
  """Inverse of `parse_word_timestamps`: shared boundaries where end == next start."""
  text, last_end = "", None
  for w in words:
    start, end = time_token(w["start"]), time_token(w["end"])
    if start != last_end:
      text += start
    text += w["word"] + end
    last_end = end
  return text


def parse_note_analysis(text: str) -> dict:
  """MNA tags → {pitch, velocity, instrument, sonic} as evaluate_note_analysis.py reads them.

  pitch / velocity: the MIDI number after `<|pitch|>` / `<|velocity|>` (None when absent; the
  eval script uses 128); instrument: text after `<|instrument|>` up to the next '<' ('' when absent);
  sonic: the ', '-separated labels after `<|sonic|>` up to the next '<' ([] when absent).
  """
  pitch = re.search(r"<\|pitch\|><\|midi_pitch_(\d+)\|>", text)
  velocity = re.search(r"<\|velocity\|><\|midi_velocity_(\d+)\|>", text)
  instrument = re.search(r"<\|instrument\|>([^<\n]*)", text)
  sonic = re.search(r"<\|sonic\|>([^<\n]*)", text)
  return {
      "pitch": int(pitch.group(1)) if pitch else None,
      "velocity": int(velocity.group(1)) if velocity else None,
      "instrument": instrument.group(1) if instrument else "",
      "sonic": [s for s in sonic.group(1).split(", ") if s] if sonic else [],
  }


def format_note_analysis(pitch: int, velocity: int, instrument: str, sonic: Sequence[str]) -> str:
  """A note-analysis target in the tag layout `parse_note_analysis` reads."""
  return (f"<|pitch|><|midi_pitch_{pitch}|><|velocity|><|midi_velocity_{velocity}|>"
          f"<|instrument|>{instrument}<|sonic|>{', '.join(sonic)}")


def _cut(ids: Sequence[int], stops: set[int]) -> list[int]:
  out = []
  for i in ids:
    if int(i) in stops:
      break
    out.append(int(i))
  return out


def chat_answer(generated_ids: Sequence[int], tokenizer: Tokenizer) -> str:
  """Chat reply: generated ids up to the first im_start / im_end / eod, decoded, stripped."""
  stops = {tokenizer.im_start_id, tokenizer.im_end_id, tokenizer.eod_id}
  return tokenizer.decode(_cut(generated_ids, stops)).strip()


def base_answer(generated_ids: Sequence[int], tokenizer: Tokenizer) -> str:
  """Base-model output as the eval scripts keep it: ids up to the first eod, decoded with the
  special tokens, stripped (pass it to `strip_tags` for plain text)."""
  return tokenizer.decode(_cut(generated_ids, {tokenizer.eod_id})).strip()


def strip_tags(text: str) -> str:
  """Every `<|…|>` tag replaced by a space, whitespace collapsed, stripped."""
  return " ".join(_TAG_RE.sub(" ", text).split())
