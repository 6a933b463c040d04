"""Special-token tables of the two checkpoint families (data only; spec §4.2 and §8).

Ids are `first_special_id + index` in a family's `specials` tuple. For Qwen-Audio that reproduces
`tokenization_qwen.py`: `SPECIAL_TOKENS + AUDIO_ST` numbered from 151643 (= len(qwen.tiktoken)).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

N_BPE_RANKS = 151643  # lines of qwen.tiktoken; the first special id of both families

LANGUAGES = ("en", "zh", "de", "es", "ko", "fr", "ja", "it")  # order matters: ids 151859..151866
MAX_TIME_CENTISECONDS = 3000  # <|30.00|>; time tokens step 0.01 s
TIME_TOKEN_RE = re.compile(r"<\|(\d{1,2}\.\d{2})\|>")


def time_token(seconds: float) -> str:
  """Surface form of the time token nearest to `seconds`, e.g. 2.33 -> '<|2.33|>'."""
  centis = round(seconds * 100)
  if not 0 <= centis <= MAX_TIME_CENTISECONDS:
    raise ValueError(f"time_token: {seconds} s is outside the time-token range 0.00..30.00 s")
  return f"<|{centis // 100}.{centis % 100:02d}|>"


def parse_time_token(token: str) -> float | None:
  """Seconds of a time-token surface form, None for any other string."""
  match = TIME_TOKEN_RE.fullmatch(token)
  return float(match.group(1)) if match else None


QWEN_BASE_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>") + tuple(
    f"<|extra_{i}|>" for i in range(205))

# Qwen-Audio `AUDIO_ST`, in id order (151851 .. 155164).
QWEN_AUDIO_TASK_SPECIALS = (
    "[[[AUDIO:modality]]]",  # audio pad placeholder
    "<|startoftranscript|>", "<|startofanalysis|>",  # transcription tag
    "<|translate|>", "<|transcribe|>", "<|caption|>", "<|keyword|>",  # task tag
    "<|unknown|>", *(f"<|{lang}|>" for lang in LANGUAGES), "<|zh_tr|>",  # language tag
    "<|notimestamps|>", "<|sil|>", "<|timestamps|>",  # timestamps tag
    *(f"<|{c // 100}.{c % 100:02d}|>" for c in range(MAX_TIME_CENTISECONDS + 1)),
    "<|caption_audiocaps|>", "<|caption_clotho|>", "<|audioset_ontology|>", "<|caption_plain|>",
    "<|itn|>", "<|wo_itn|>",  # output instructions
    "<|startofentityvalue|>", "<|endofentityvalue|>", "<|startofentitytype|>",
    "<|endofentitytype|>", "<|named_entity_recognition|>",
    "<|audio_grounding|>", "<|startofword|>", "<|endofword|>", "<|delim|>",
    "<|emotion_recognition|>", "<|music_description|>", "<|note_analysis|>",
    "<|pitch|>", *(f"<|midi_pitch_{i}|>" for i in range(128)),
    "<|velocity|>", *(f"<|midi_velocity_{i}|>" for i in range(128)),
    "<|sonic|>", "<|instrument|>", "<|speaker_meta|>", "<|song_meta|>",
    "<|question|>", "<|answer|>", "<|choice|>", "<|scene|>", "<|event|>",
    "<|vocal_classification|>", "<|speech_understanding|>", "<|scenario|>", "<|action|>",
    "<|entities|>", "<|speech_edit|>",
    "<audio>", "</audio>",
)

# Qwen2-Audio (Qwen2 tokenizer added tokens). 151646 is confirmed by transformers'
# Qwen2AudioConfig.audio_token_index; 151647/151648 are UNVERIFIED (spec §8, §10).
QWEN2_AUDIO_SPECIALS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>")


@dataclasses.dataclass(frozen=True)
class TokenFamily:
  """Specials and named tokens of one checkpoint family."""

  name: str
  specials: tuple[str, ...]  # id = first_special_id + index (tiktoken backend)
  eod: str
  im_start: str
  im_end: str
  audio_start: str
  audio_end: str
  audio_pad: str
  # "closed_tag": `<audio>PATH</audio>` whose inside becomes pad × n (Qwen-Audio);
  # "placeholder": one pad token becomes pad × n between bos/eos (Qwen2-Audio).
  audio_layout: Literal["closed_tag", "placeholder"]
  # Specials parsed inside chat role/content text ("all" or a tuple of surface forms).
  chat_content_specials: tuple[str, ...] | Literal["all"]
  first_special_id: int = N_BPE_RANKS


FAMILIES = {
    "qwen-audio": TokenFamily(
        name="qwen-audio",
        specials=QWEN_BASE_SPECIALS + QWEN_AUDIO_TASK_SPECIALS,
        eod="<|endoftext|>", im_start="<|im_start|>", im_end="<|im_end|>",
        audio_start="<audio>", audio_end="</audio>", audio_pad="[[[AUDIO:modality]]]",
        audio_layout="closed_tag",
        chat_content_specials=QWEN_AUDIO_TASK_SPECIALS),
    "qwen2-audio": TokenFamily(
        name="qwen2-audio",
        specials=QWEN2_AUDIO_SPECIALS,
        eod="<|endoftext|>", im_start="<|im_start|>", im_end="<|im_end|>",
        audio_start="<|audio_bos|>", audio_end="<|audio_eos|>", audio_pad="<|AUDIO|>",
        audio_layout="placeholder",
        chat_content_specials="all"),
}


def get_family(name: str) -> TokenFamily:
  """The token family called `name` ('qwen-audio' or 'qwen2-audio')."""
  if name not in FAMILIES:
    raise ValueError(f"tokenizer family {name!r} is unknown; choose one of {sorted(FAMILIES)}")
  return FAMILIES[name]
