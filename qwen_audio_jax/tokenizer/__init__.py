"""Tokenizers: Qwen byte-level BPE (tiktoken, `qwen.tiktoken`) and SentencePiece, one interface; Whisper's
own tokenizer (tokenizer.json or openai .tiktoken) for Whisper checkpoints (`whisper.py`)."""

from qwen_audio_jax.tokenizer.base import Tokenizer
from qwen_audio_jax.tokenizer.errors import SpecialTokenError, TokenizerError, VocabFileError
from qwen_audio_jax.tokenizer.factory import get_tokenizer
from qwen_audio_jax.tokenizer.seed_corpus import SEED_TEXTS
from qwen_audio_jax.tokenizer.sentencepiece_backend import SentencePieceTokenizer, train_sentencepiece
from qwen_audio_jax.tokenizer.special_tokens import (
    FAMILIES,
    LANGUAGES,
    TokenFamily,
    get_family,
    parse_time_token,
    time_token,
)
from qwen_audio_jax.tokenizer.tiktoken_backend import PAT_STR, TiktokenTokenizer, default_vocab_path
from qwen_audio_jax.tokenizer.whisper import WhisperTokenizer, get_whisper_tokenizer, whisper_prompt

__all__ = [
    "FAMILIES",
    "LANGUAGES",
    "PAT_STR",
    "SEED_TEXTS",
    "SentencePieceTokenizer",
    "SpecialTokenError",
    "TiktokenTokenizer",
    "TokenFamily",
    "Tokenizer",
    "TokenizerError",
    "VocabFileError",
    "WhisperTokenizer",
    "default_vocab_path",
    "get_family",
    "get_tokenizer",
    "get_whisper_tokenizer",
    "parse_time_token",
    "time_token",
    "train_sentencepiece",
    "whisper_prompt",
]
