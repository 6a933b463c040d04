"""SentencePiece backend for models trained from scratch with their own vocabulary.

The family's specials are user-defined symbols of the model (never split while training), so the
prompt builders, which look ids up by surface form, work unchanged. Special-token parsing follows
the tiktoken backend: only `allowed_special` occurrences become special ids; any other occurrence is
encoded as plain text (character by character, so SentencePiece cannot re-merge it into the symbol).
"""

from __future__ import annotations

import os
import re
import unicodedata
from typing import Iterable

import sentencepiece as spm

from qwen_audio_jax.tokenizer.base import SpecialSet, Tokenizer
from qwen_audio_jax.tokenizer.errors import SpecialTokenError, TokenizerError, VocabFileError
from qwen_audio_jax.tokenizer.special_tokens import TokenFamily, get_family

N_BYTE_PIECES = 256  # byte_fallback pieces <0x00>..<0xFF>
_TAG_SHAPE = r"<\|[^<>|\[\]]*\|>"  # specials start with "<" or "[", never inside a tag


def _special_pattern(specials: Iterable[str]) -> re.Pattern:
  """Finds every candidate special: `<|…|>` shapes generically, other surface forms literally."""
  others = sorted((s for s in specials if not re.fullmatch(_TAG_SHAPE, s)), key=len, reverse=True)
  return re.compile("|".join([_TAG_SHAPE] + [re.escape(s) for s in others]))


class SentencePieceTokenizer(Tokenizer):
  """A trained SentencePiece model wrapped in the `Tokenizer` interface of a family."""

  def __init__(self, model_path: str, family: TokenFamily):
    if not os.path.isfile(model_path):
      raise VocabFileError(f"{model_path}: SentencePiece model not found")
    self.model_path = model_path
    try:
      self._sp = spm.SentencePieceProcessor(model_file=model_path)
    except (OSError, RuntimeError) as e:
      raise VocabFileError(f"{model_path}: not a SentencePiece model ({e})") from None
    special_ids = {}
    for token in family.specials:
      token_id = self._sp.piece_to_id(token)
      if token_id == self._sp.unk_id() or self._sp.id_to_piece(token_id) != token:
        raise VocabFileError(
            f"{model_path}: special {token!r} of {family.name} is not a piece of the model "
            "(train it with train_sentencepiece(family=...))")
      special_ids[token] = token_id
    super().__init__(family, special_ids)
    self._pattern = _special_pattern(family.specials)

  def __reduce__(self):
    return (load_sentencepiece, (self.family.name, self.model_path))

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def encode(self, text: str, allowed_special: SpecialSet = "all",
             disallowed_special: SpecialSet = ()) -> list[int]:
    allowed, disallowed = self._resolve_specials(allowed_special, disallowed_special)
    text = unicodedata.normalize("NFC", text)
    ids, plain_start = [], 0
    for match in self._pattern.finditer(text):
      token = match.group()
      if token not in self.special_tokens:
        continue  # a `<|…|>` look-alike: ordinary text
      if token in disallowed:
        raise self._disallowed_error(token)
      ids += self._encode_plain(text[plain_start:match.start()])
      if token in allowed:
        ids.append(self.special_tokens[token])
      else:
        ids += [i for char in token for i in self._sp.encode(char)]
      plain_start = match.end()
    return ids + self._encode_plain(text[plain_start:])

  def _encode_plain(self, text: str) -> list[int]:
    return self._sp.encode(text) if text else []

  def _decode_ids(self, ids: list[int], errors: str) -> str:
    return self._sp.decode(ids)

  def token_to_id(self, token: str | bytes) -> int:
    piece = token.decode("utf-8") if isinstance(token, bytes) else token
    token_id = self._sp.piece_to_id(piece)
    if token_id == self._sp.unk_id() and piece != self._sp.id_to_piece(token_id):
      raise SpecialTokenError(f"token_to_id: {token!r} is not a piece of {self.model_path}")
    return token_id

  def id_to_token(self, token_id: int) -> str:
    token_id = int(token_id)
    if not 0 <= token_id < self.vocab_size:
      raise TokenizerError(f"id_to_token: id {token_id} is outside the vocabulary [0, {self.vocab_size})")
    return self._sp.id_to_piece(token_id)


def load_sentencepiece(family: str, model_path: str) -> SentencePieceTokenizer:
  """A `SentencePieceTokenizer` for `family` from a `.model` file."""
  return SentencePieceTokenizer(model_path, get_family(family))


def train_sentencepiece(texts: Iterable[str], vocab_size: int, model_dir: str, family: str = "qwen-audio",
                        model_name: str = "spm", model_type: str = "bpe",
                        num_threads: int = 1) -> SentencePieceTokenizer:
  """Train a byte-fallback SentencePiece model on `texts` and return it wrapped.

  `vocab_size` counts everything: the family's specials (user-defined symbols), 256 byte pieces,
  `<unk>` and the learned pieces; it is an upper bound (`hard_vocab_limit=False`) so tiny corpora
  work. Normalisation is identity after NFC and whitespace is kept, so decode(encode(x)) == NFC(x).
  Single-threaded by default so the same corpus always gives the same model.
  """
  token_family = get_family(family)
  minimum = len(token_family.specials) + N_BYTE_PIECES + 2
  if vocab_size < minimum:
    raise TokenizerError(
        f"train_sentencepiece: vocab_size {vocab_size} is too small for the {len(token_family.specials)} "
        f"{family} specials + {N_BYTE_PIECES} byte pieces + <unk>; use at least {minimum}")
  sentences = [unicodedata.normalize("NFC", t) for t in texts if t]
  if not sentences:
    raise TokenizerError("train_sentencepiece: no training text given")
  os.makedirs(model_dir, exist_ok=True)
  prefix = os.path.join(model_dir, model_name)
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_prefix=prefix, vocab_size=vocab_size,
        model_type=model_type, user_defined_symbols=list(token_family.specials),
        byte_fallback=True, character_coverage=1.0, split_digits=True,
        normalization_rule_name="identity", add_dummy_prefix=False, remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True, hard_vocab_limit=False,
        unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
        num_threads=num_threads, shuffle_input_sentence=False, minloglevel=2)
  except RuntimeError as e:
    raise TokenizerError(f"train_sentencepiece: SentencePiece training failed: {e}") from None
  return SentencePieceTokenizer(prefix + ".model", token_family)
