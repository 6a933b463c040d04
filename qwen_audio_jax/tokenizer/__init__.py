"""Tokenizers: Qwen byte-level BPE (tiktoken, `qwen.tiktoken`) and SentencePiece, one interface."""

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
    "default_vocab_path",
    "get_family",
    "get_tokenizer",
    "parse_time_token",
    "time_token",
    "train_sentencepiece",
]
