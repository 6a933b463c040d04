"""Generated ids → what the user reads: text, word timestamps, per-clip records; chunked windows stitched.

Text keeps the special tokens a base model emits (time tokens, note tags) as Qwen-Audio's evaluation
scripts keep them — never `skip_special_tokens`, which would drop timestamps (spec §9 item 7) — and
loses only the stop token. Chat replies are cut at the first im_start / im_end / end of text.

Chunked clips (policy "chunk"): window k starts at offset_k. Word timestamps get the offset added; with
overlapping windows a word belongs to the window whose share of the overlap it starts in (the cut is the
overlap's midpoint). Plain text is joined; with overlap, the longest run of words (at least two) that
ends window k and starts window k+1 is kept once.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from qwen_audio_jax.infer.engine import RowOutput
from qwen_audio_jax.infer.requests import Row
from qwen_audio_jax.prompts import chat_answer, parse_word_timestamps
from qwen_audio_jax.tokenizer import Tokenizer


@dataclasses.dataclass
class Result:
  """The answer to one request."""

  text: str
  ids: list[int]  # generated ids without the prompt (windows concatenated)
  finish_reason: str  # stop | length | audio_cap | loop (the first window that did not stop, if any)
  duration_s: float  # true duration of the (first) audio, 0 without audio
  truncated: bool
  words: list[dict] | None = None  # [{word, start, end}] for SRWT, seconds from the clip start
  windows: list[dict] = dataclasses.field(default_factory=list)  # per window: offset, text, ids, reason
  prompt: str = ""
  decode: dict = dataclasses.field(default_factory=dict)
  score: float | None = None

  def as_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def row_text(out: RowOutput, tok: Tokenizer, chat: bool) -> str:
  if chat:
    return chat_answer(out.ids, tok)
  ids = list(out.ids)
  if ids and out.reason == "stop" and tok.is_special(ids[-1]):
    ids = ids[:-1]
  return tok.decode(ids).strip()


def _join_text(texts: Sequence[str], overlapping: bool) -> str:
  words: list[str] = []
  for text in texts:
    new = text.split()
    if overlapping and words:
      best = 0
      for n in range(min(len(words), len(new)), 1, -1):
        if words[-n:] == new[:n]:
          best = n
          break
      new = new[best:]
    words += new
  return " ".join(words)


def _join_words(per_window: Sequence[list[dict]], offsets: Sequence[float], ends: Sequence[float]) -> list[dict]:
  out: list[dict] = []
  for k, words in enumerate(per_window):
    lo = (offsets[k] + ends[k - 1]) / 2 if k > 0 and ends[k - 1] > offsets[k] else -1.0
    hi = (offsets[k + 1] + ends[k]) / 2 if k + 1 < len(offsets) and ends[k] > offsets[k + 1] else float("inf")
    for w in words:
      start, end = round(w["start"] + offsets[k], 2), round(w["end"] + offsets[k], 2)
      if lo <= start < hi:
        out.append({"word": w["word"], "start": start, "end": end})
  return out


def make_result(rows: Sequence[Row], outs: Sequence[RowOutput], text_of: Callable[[RowOutput], str], *,
                settings: dict, want_words: bool) -> Result:
  """One Result from the rows of one request (one row, or the windows of a chunked clip, in order);
  `text_of` turns a row's ids into its text (e.g. `row_text` with the family's tokenizer)."""
  texts = [text_of(o) for o in outs]
  clip = rows[0].clip
  offsets = [w.offset_s for w in clip.windows] if clip is not None and len(rows) > 1 else [0.0]
  ends = [w.offset_s + w.duration_s for w in clip.windows] if clip is not None and len(rows) > 1 else [0.0]
  windows = [{"offset_s": offsets[k] if k < len(offsets) else 0.0, "text": t, "ids": o.ids, "finish_reason": o.reason}
             for k, (t, o) in enumerate(zip(texts, outs))]
  overlapping = len(rows) > 1 and any(ends[k] > offsets[k + 1] for k in range(len(rows) - 1))
  words = None
  if want_words:
    per_window = [parse_word_timestamps(r.forced_prefix + t) for r, t in zip(rows, texts)]
    words = _join_words(per_window, offsets, ends)
  reasons = [o.reason for o in outs]
  not_stopped = [r for r in reasons if r != "stop"]
  return Result(
      text=texts[0] if len(rows) == 1 else _join_text(texts, overlapping),
      ids=[i for o in outs for i in o.ids], finish_reason=not_stopped[0] if not_stopped else "stop",
      duration_s=float(clip.duration_s) if clip is not None else 0.0,
      truncated=bool(clip.truncated) if clip is not None else False, words=words,
      windows=windows if len(rows) > 1 else [], prompt=rows[0].prompt_text, decode=dict(settings),
      score=outs[0].score if len(outs) == 1 else None)
