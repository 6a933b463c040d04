"""The tokenizer interface shared by the tiktoken and sentencepiece backends.

A backend supplies the engine (`encode`, `_decode_ids`, `token_to_id`, `id_to_token`, `vocab_size`)
and the surface → id map of its family's specials; this class adds the named ids, the special-set
checks and the `skip_special_tokens` / `keep_timestamps` decode filter.
"""

from __future__ import annotations

import abc
import types
from typing import AbstractSet, Collection, Iterable, Literal, Mapping

from qwen_audio_jax.tokenizer.errors import SpecialTokenError, TokenizerError
from qwen_audio_jax.tokenizer.special_tokens import TokenFamily, parse_time_token

SpecialSet = Literal["all"] | AbstractSet[str] | Collection[str]


class Tokenizer(abc.ABC):
  """Text ↔ ids for one family. Never reads audio, never touches the network."""

  def __init__(self, family: TokenFamily, special_ids: Mapping[str, int]):
    self.family = family
    self.special_tokens = types.MappingProxyType(dict(special_ids))  # surface form -> id
    self.special_ids = frozenset(special_ids.values())
    self.timestamp_ids = frozenset(
        i for token, i in special_ids.items() if parse_time_token(token) is not None)
    self.eod_id = special_ids[family.eod]
    self.pad_id = self.eod_id  # Qwen FAQ: eod doubles as pad (and bos/eos where needed)
    self.im_start_id = special_ids[family.im_start]
    self.im_end_id = special_ids[family.im_end]
    self.audio_start_id = special_ids[family.audio_start]
    self.audio_end_id = special_ids[family.audio_end]
    self.audio_pad_id = special_ids[family.audio_pad]

  # --- engine -------------------------------------------------------------------------------
  @property
  @abc.abstractmethod
  def vocab_size(self) -> int:
    """Number of ids (regular tokens + specials)."""

  @abc.abstractmethod
  def encode(self, text: str, allowed_special: SpecialSet = "all",
             disallowed_special: SpecialSet = ()) -> list[int]:
    """NFC-normalise and encode; specials in `allowed_special` are parsed as single ids."""

  @abc.abstractmethod
  def _decode_ids(self, ids: list[int], errors: str) -> str:
    """Concatenate the tokens' bytes and decode them as UTF-8."""

  @abc.abstractmethod
  def token_to_id(self, token: str | bytes) -> int:
    """Id of a token (special surface form, or regular token text/bytes)."""

  @abc.abstractmethod
  def id_to_token(self, token_id: int) -> str | bytes:
    """Special surface form (str) or regular token (backend-specific form)."""

  # --- shared -------------------------------------------------------------------------------
  def decode(self, ids: Iterable[int], skip_special_tokens: bool = False,
             keep_timestamps: bool = False, errors: str = "replace") -> str:
    """Ids → text. `skip_special_tokens` drops every special id (as the reference does, timestamps
    included) unless `keep_timestamps`, which keeps the time tokens `<|t.tt|>`."""
    ids = [int(i) for i in ids]
    for i in ids:
      if not 0 <= i < self.vocab_size:
        raise TokenizerError(f"decode: id {i} is outside the vocabulary [0, {self.vocab_size})")
    if skip_special_tokens:
      ids = [i for i in ids
             if i not in self.special_ids or (keep_timestamps and i in self.timestamp_ids)]
    return self._decode_ids(ids, errors)

  def is_special(self, token_id: int) -> bool:
    return int(token_id) in self.special_ids

  def special_id(self, token: str) -> int:
    """Id of a special surface form, with a clear error for names that are not specials."""
    if token not in self.special_tokens:
      raise SpecialTokenError(
          f"{token!r} is not a special token of the {self.family.name} tokenizer")
    return self.special_tokens[token]

  def _special_set(self, value: SpecialSet, arg: str) -> frozenset[str]:
    """Resolve 'all' / a collection of surface forms; unknown names are an error, not ignored."""
    if value == "all":
      return frozenset(self.special_tokens)
    if isinstance(value, str):
      raise SpecialTokenError(f"encode: {arg} must be 'all' or a collection of specials, got {value!r}")
    names = frozenset(value)
    unknown = sorted(names - self.special_tokens.keys())
    if unknown:
      raise SpecialTokenError(
          f"encode: {arg} names {unknown[:3]} which are not {self.family.name} special tokens")
    return names

  def _resolve_specials(self, allowed_special: SpecialSet,
                        disallowed_special: SpecialSet) -> tuple[frozenset[str], frozenset[str]]:
    allowed = self._special_set(allowed_special, "allowed_special")
    if disallowed_special == "all":
      disallowed = frozenset(self.special_tokens) - allowed
    else:
      disallowed = self._special_set(disallowed_special, "disallowed_special") - allowed
    return allowed, disallowed

  @staticmethod
  def _disallowed_error(token: str) -> SpecialTokenError:
    return SpecialTokenError(
        f"encode: the text contains the special token {token!r}, which disallowed_special forbids "
        "(add it to allowed_special to parse it, or drop it from disallowed_special to keep it as text)")
