"""Whisper's special tokens (data): language codes, the order of the specials after the BPE ranks, and
the id layout of openai checkpoints from their vocabulary size alone.

openai numbers the specials from len(ranks): `<|endoftext|>`, `<|startoftranscript|>`, one
`<|lang|>` per language (99; large-v3 adds `<|yue|>`), `<|translate|>`, `<|transcribe|>`,
`<|startoflm|>`, `<|startofprev|>`, `<|nospeech|>`, `<|notimestamps|>`, then 1501 time tokens
`<|0.00|>` .. `<|30.00|>` in 0.02 s steps. Multilingual models use `multilingual.tiktoken` (50257
ranks), English-only ones `gpt2.tiktoken` (50256 ranks) with the same specials.
"""

from __future__ import annotations

import re

# openai-whisper's LANGUAGES order (language id = sot + 1 + index).
LANGUAGES = (
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv", "it", "id", "hi",
    "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no", "th", "ur", "hr", "bg", "lt", "la",
    "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr", "az", "sl", "kn", "et", "mk", "br", "eu", "is", "hy",
    "ne", "mn", "bs", "kk", "sq", "sw", "gl", "mr", "pa", "si", "km", "sn", "yo", "so", "af", "oc", "ka", "be",
    "tg", "sd", "gu", "am", "yi", "lo", "uz", "fo", "ht", "ps", "tk", "nn", "mt", "sa", "lb", "my", "bo", "tl",
    "mg", "as", "tt", "haw", "ln", "ha", "ba", "jw", "su", "yue",
)
N_TIMESTAMPS = 1501  # <|0.00|> .. <|30.00|>
TIME_STEP = 0.02
TIMESTAMP_RE = re.compile(r"<\|(\d+\.\d{2})\|>")
TASKS = ("translate", "transcribe")
# Names of the single specials (surface forms; transformers' older files spell no-speech `<|nocaptions|>`).
EOT, SOT, SOT_LM, SOT_PREV = "<|endoftext|>", "<|startoftranscript|>", "<|startoflm|>", "<|startofprev|>"
NO_SPEECH, NO_CAPTIONS, NO_TIMESTAMPS = "<|nospeech|>", "<|nocaptions|>", "<|notimestamps|>"

# Text that is not speech (openai's `non_speech_tokens`): each symbol alone and after a space is
# suppressed when it is one token; MUSIC symbols also by their first token (they share 2 UTF-8 bytes).
NON_SPEECH_SYMBOLS = tuple('"#()*+/:;<=>@[\\]^_`{|}~「」『』') + tuple(
    "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split())
MUSIC_SYMBOLS = tuple("♩♪♫♬♭♮♯")
WORD_START_SYMBOLS = (" -", " '")  # allowed between words, suppressed at a word start


def time_token(index: int) -> str:
  return f"<|{index * TIME_STEP:.2f}|>"


def openai_specials(num_languages: int) -> tuple[str, ...]:
  """Surface forms of the specials in id order (the first gets id len(ranks))."""
  return ((EOT, SOT) + tuple(f"<|{code}|>" for code in LANGUAGES[:num_languages])
          + ("<|translate|>", "<|transcribe|>", SOT_LM, SOT_PREV, NO_SPEECH, NO_TIMESTAMPS)
          + tuple(time_token(i) for i in range(N_TIMESTAMPS)))


def openai_layout(n_vocab: int) -> tuple[int, int] | None:
  """(BPE ranks, languages) of an openai checkpoint with `n_vocab` ids (as openai's model derives them),
  or None for a vocabulary that is not Whisper's (e.g. tiny test models)."""
  multilingual = n_vocab >= 51865
  n_ranks, num_languages = (50257 if multilingual else 50256), n_vocab - 51765 - int(multilingual)
  if not 1 <= num_languages <= len(LANGUAGES):
    return None
  return n_ranks, num_languages
