"""ChatML context of Qwen-Audio-Chat, id for id as `qwen_generation_utils.make_context` (spec §4.4).

Each turn is `[im_start] + enc(role) + [\\n] + enc(content) + [im_end]`, turns joined by `\\n`; role and
content are encoded with only the family's chat specials allowed (audio/task tags for Qwen-Audio),
so a literal `<|im_start|>` typed by a user stays text. History is trimmed from the oldest turn.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

from qwen_audio_jax.prompts.audio_spans import AudioMismatchError, count_audio_slots, expand_audio
from qwen_audio_jax.tokenizer.base import Tokenizer

DEFAULT_SYSTEM = "You are a helpful assistant."
DEFAULT_MAX_WINDOW = 6144


@dataclasses.dataclass(frozen=True)
class ChatContext:
  ids: list[int]  # prompt ids, audio expanded, ending with "<|im_start|>assistant\n"
  text: str  # the same context as text (audio paths, not placeholders)
  audio_indices: tuple[int, ...]  # which of the conversation's audios the ids hold, in order
  dropped_turns: int  # history turns left out to fit max_window_size


def from_list_format(items: Sequence[Mapping[str, str]]) -> str:
  """`[{'audio': p}, {'text': t}]` → `"Audio 1:<audio>p</audio>\\nt"` (no space after the colon)."""
  text, n_audios = "", 0
  for item in items:
    if "audio" in item:
      n_audios += 1
      text += f"Audio {n_audios}:<audio>{item['audio']}</audio>\n"
    elif "text" in item:
      text += item["text"]
    else:
      raise ValueError(f"from_list_format: element {dict(item)!r} has neither 'audio' nor 'text'")
  return text


def chat_stop_words(tokenizer: Tokenizer) -> list[list[int]]:
  """Stop sequences of chat generation: `[[im_end], [im_start]]`."""
  return [[tokenizer.im_end_id], [tokenizer.im_start_id]]


def make_chat_context(tokenizer: Tokenizer, query: str,
                      history: Sequence[tuple[str, str | None]] = (),
                      system: str = DEFAULT_SYSTEM, max_window_size: int = DEFAULT_MAX_WINDOW,
                      audio_tokens: Sequence[int] | None = None) -> ChatContext:
  """Context ids for `query` after `history` [(query, response), …], oldest first.

  `audio_tokens[i]` is the token count n of the i-th `<audio>` in conversation order (system,
  history oldest first, query); required when the conversation holds audio.
  """
  nl = tokenizer.encode("\n")
  pieces, turn_parts = [system], []  # turn_parts[k] = (index of query k, index of response k or None)
  for q, r in history:
    pieces.append(q)
    turn_parts.append((len(pieces) - 1, None if r is None else len(pieces)))
    if r is not None:
      pieces.append(r)
  pieces.append(query)
  part_ids = [tokenizer.encode(p, allowed_special=_chat_specials(tokenizer)) for p in pieces]
  slots = [count_audio_slots(ids, tokenizer) for ids in part_ids]
  counts = None if audio_tokens is None else list(audio_tokens)
  if counts is None and sum(slots):
    raise AudioMismatchError(
        f"make_chat_context: the conversation has {sum(slots)} audio(s) but audio_tokens=None "
        "(compute counts with qwen_audio_jax.audio.lengths.audio_tokens)")
  if counts is not None and len(counts) != sum(slots):
    raise AudioMismatchError(
        f"make_chat_context: the conversation has {sum(slots)} audio placeholder(s) but "
        f"{len(counts)} audio token count(s) were given")
  offsets = [sum(slots[:k]) for k in range(len(slots))]
  audio_of = [list(range(o, o + s)) for o, s in zip(offsets, slots)]
  expanded = [expand_audio(ids, counts[o:o + s], tokenizer) if s else ids
              for ids, o, s in zip(part_ids, offsets, slots)]

  def turn(role: str, content_ids: list[int]) -> list[int]:
    role_ids = tokenizer.encode(role, allowed_special=_chat_specials(tokenizer))
    return [tokenizer.im_start_id] + role_ids + nl + content_ids + [tokenizer.im_end_id]

  system_ids = turn("system", expanded[0])
  context, text, kept_audio, dropped = [], "", [], 0
  for k in range(len(turn_parts) - 1, -1, -1):  # newest first; stop at the first that does not fit
    qi, ri = turn_parts[k]
    ids = nl + turn("user", expanded[qi]) + nl
    turn_text = f"\n<|im_start|>user\n{pieces[qi]}<|im_end|>\n"
    audio = audio_of[qi]
    if ri is not None:
      ids += turn("assistant", expanded[ri])
      turn_text += f"<|im_start|>assistant\n{pieces[ri]}<|im_end|>"
      audio = audio + audio_of[ri]
    if len(system_ids) + len(ids) + len(context) >= max_window_size:
      dropped = k + 1
      break
    context, text, kept_audio = ids + context, turn_text + text, audio + kept_audio
  ids = (system_ids + context + nl + turn("user", expanded[-1]) + nl
         + [tokenizer.im_start_id] + tokenizer.encode("assistant") + nl)
  text = (f"<|im_start|>system\n{system}<|im_end|>" + text
          + f"\n<|im_start|>user\n{query}<|im_end|>\n<|im_start|>assistant\n")
  return ChatContext(ids=ids, text=text, dropped_turns=dropped,
                     audio_indices=tuple(audio_of[0] + kept_audio + audio_of[-1]))


def _chat_specials(tokenizer: Tokenizer):
  specials = tokenizer.family.chat_content_specials
  return "all" if specials == "all" else set(specials)
