"""Whisper's tokenizer, offline: a transformers `tokenizer.json` (read with `tokenizers`) or an openai
`.tiktoken` vocabulary (read with `tiktoken`, specials numbered as openai-whisper does).

  tok = get_whisper_tokenizer(CHECKPOINT_DIR)   # or a tokenizer.json / *.tiktoken path, or an HF folder
  ids = whisper_prompt(tok, language="en", task="transcribe")  # sot, <|en|>, <|transcribe|>, <|notimestamps|>
  text = tok.decode(generated, skip_special_tokens=True)

A converted checkpoint keeps the source's tokenizer files in `source_assets/` (transformers folders), or
the `.tiktoken` file given to / found by the converter (openai `.pt`). Nothing is downloaded.
Decoding follows openai and transformers: time tokens are dropped unless `keep_timestamps`; other
specials are kept unless `skip_special_tokens` (which also drops a `<|startofprev|>` context prompt).
Encoding is plain text: a special's surface form in the text is an error unless `allow_special`.
"""

from __future__ import annotations

import functools
import glob
import json
import os
from typing import Iterable

import tiktoken

from qwen_audio_jax.tokenizer import whisper_specials as ws
from qwen_audio_jax.tokenizer.errors import SpecialTokenError, TokenizerError, VocabFileError
from qwen_audio_jax.tokenizer.tiktoken_backend import load_bpe_ranks

# GPT-2's pre-tokenisation regex (openai-whisper's encodings and the transformers ByteLevel pre-tokenizer).
GPT2_PAT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


class _Tiktoken:
  """openai-whisper's encoding: BPE ranks of the file (gpt2.tiktoken 50256, multilingual.tiktoken 50257),
  then the specials; the number of languages follows from the model's vocabulary size (default 99)."""

  def __init__(self, path: str, n_vocab: int | None):
    ranks = load_bpe_ranks(path, None)
    if n_vocab is None:
      num_languages = 99
    else:
      num_languages = n_vocab - len(ranks) - (len(ws.openai_specials(0)))
      if not 0 <= num_languages <= len(ws.LANGUAGES):
        raise VocabFileError(f"{path}: {len(ranks)} BPE ranks cannot make a Whisper vocabulary of {n_vocab} ids "
                             "(gpt2.tiktoken is for English-only models, multilingual.tiktoken for the others)")
    specials = {s: len(ranks) + i for i, s in enumerate(ws.openai_specials(num_languages))}
    self.encoding = tiktoken.Encoding(os.path.basename(path), pat_str=GPT2_PAT, mergeable_ranks=ranks,
                                      special_tokens=specials)
    self.specials, self.vocab_size = specials, self.encoding.n_vocab

  def encode(self, text: str) -> list[int]:
    return self.encoding.encode(text, allowed_special="all", disallowed_special=())

  def decode(self, ids: list[int]) -> str:
    return self.encoding.decode(ids, errors="replace")


class _TokenizerJson:
  """A transformers Whisper tokenizer.json: byte-level BPE + added tokens. Files without the time tokens
  (older exports) get them after `<|notimestamps|>`, as openai numbers them."""

  def __init__(self, path: str):
    import tokenizers  # pylint: disable=import-outside-toplevel
    try:
      self.tok = tokenizers.Tokenizer.from_file(path)
    except Exception as e:  # the Rust error names the cause
      raise VocabFileError(f"{path}: not a readable tokenizer.json ({str(e).splitlines()[0]})")
    added = self.tok.get_added_tokens_decoder()
    self.specials = {t.content: i for i, t in added.items() if t.special or ws.TIMESTAMP_RE.fullmatch(t.content)}
    self.n_file = self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)
    if ws.time_token(0) not in self.specials and ws.NO_TIMESTAMPS in self.specials:
      first = self.specials[ws.NO_TIMESTAMPS] + 1
      self.specials.update({ws.time_token(i): first + i for i in range(ws.N_TIMESTAMPS)})
      self.vocab_size = max(self.vocab_size, first + ws.N_TIMESTAMPS)
      self._time_text = {i: t for t, i in self.specials.items() if i >= self.n_file}

  def encode(self, text: str) -> list[int]:
    return self.tok.encode(text, add_special_tokens=False).ids

  def decode(self, ids: list[int]) -> str:
    parts, run = [], []
    for i in ids:  # ids past the file are time tokens it does not list
      if i < self.n_file:
        run.append(i)
        continue
      parts += [self.tok.decode(run, skip_special_tokens=False), self._time_text[i]]
      run = []
    return "".join(parts + [self.tok.decode(run, skip_special_tokens=False)])


class WhisperTokenizer:
  """Text <-> ids and the named special ids (sot, eot, languages, tasks, notimestamps, timestamps)."""

  def __init__(self, backend, path: str):
    self.path, self._backend, sp = path, backend, backend.specials
    self.vocab_size: int = backend.vocab_size
    self.special_tokens = dict(sp)  # surface form -> id
    self.special_ids = frozenset(sp.values())

    def need(*names):
      for name in names:
        if name in sp:
          return sp[name]
      raise VocabFileError(f"{path}: special token {names[0]} is missing (not a Whisper tokenizer?)")

    self.eot, self.sot = need(ws.EOT), need(ws.SOT)
    self.translate, self.transcribe = need("<|translate|>"), need("<|transcribe|>")
    self.sot_lm, self.sot_prev, self.no_timestamps = need(ws.SOT_LM), need(ws.SOT_PREV), need(ws.NO_TIMESTAMPS)
    self.no_speech = need(ws.NO_SPEECH, ws.NO_CAPTIONS)
    self.timestamp_begin = need(ws.time_token(0))
    if [sp.get(ws.time_token(i)) for i in range(ws.N_TIMESTAMPS)] != list(
        range(self.timestamp_begin, self.timestamp_begin + ws.N_TIMESTAMPS)):
      raise VocabFileError(f"{path}: the {ws.N_TIMESTAMPS} time tokens are not consecutive ids")
    self.languages = {code: sp[f"<|{code}|>"] for code in ws.LANGUAGES if f"<|{code}|>" in sp}  # code -> id

  def encode(self, text: str, allow_special: bool = False) -> list[int]:
    if not allow_special:
      found = [s for s in self.special_tokens if s in text]
      if found:
        raise SpecialTokenError(f"encode: the text contains the special token {min(found, key=text.index)!r} "
                                "(pass allow_special=True to read it as one id)")
    return self._backend.encode(text)

  def decode(self, ids: Iterable[int], skip_special_tokens: bool = False, keep_timestamps: bool = False) -> str:
    ids = [int(i) for i in ids]
    for i in ids:
      if not 0 <= i < self.vocab_size:
        raise TokenizerError(f"decode: id {i} is outside the vocabulary [0, {self.vocab_size})")
    if skip_special_tokens and ids and ids[0] == self.sot_prev:  # a previous-text prompt precedes the sot
      ids = ids[ids.index(self.sot):] if self.sot in ids else []

    def keep(i):
      if self.timestamp_begin <= i < self.timestamp_begin + ws.N_TIMESTAMPS:
        return keep_timestamps
      return not (skip_special_tokens and i in self.special_ids)
    return self._backend.decode([i for i in ids if keep(i)])

  def language_id(self, language: str) -> int:
    if language not in self.languages:
      raise SpecialTokenError(f"language {language!r} is not in this Whisper tokenizer "
                              f"({len(self.languages)} languages: {', '.join(list(self.languages)[:8])}, ...)")
    return self.languages[language]

  def timestamp_id(self, seconds: float) -> int:
    return self.timestamp_begin + round(seconds / ws.TIME_STEP)

  def non_speech_tokens(self) -> tuple[int, ...]:
    """Ids of symbols that are not speech (openai's default `suppress_tokens="-1"` set), sorted."""
    result = {self._backend.encode(s)[0] for s in ws.WORD_START_SYMBOLS}
    for symbol in ws.NON_SPEECH_SYMBOLS + ws.MUSIC_SYMBOLS:
      for ids in (self._backend.encode(symbol), self._backend.encode(" " + symbol)):
        if len(ids) == 1 or symbol in ws.MUSIC_SYMBOLS:
          result.add(ids[0])
    return tuple(sorted(result))


def whisper_prompt(tok: WhisperTokenizer, language: str | None = "en", task: str | None = "transcribe",
                   timestamps: bool = False) -> list[int]:
  """`<|startoftranscript|>[<|language|>][<|task|>][<|notimestamps|>]` (English-only models: language
  and task None)."""
  ids = [tok.sot]
  if language is not None:
    ids.append(tok.language_id(language))
  if task is not None:
    if task not in ws.TASKS:
      raise SpecialTokenError(f"task must be one of {ws.TASKS}, got {task!r}")
    ids.append(tok.transcribe if task == "transcribe" else tok.translate)
  if not timestamps:
    ids.append(tok.no_timestamps)
  return ids


def _checkpoint_vocab(directory: str) -> int | None:
  path = os.path.join(directory, "model_config.json")
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    text = json.load(f).get("text_decoder")
  return None if not text else int(text["vocab_size"])


def find_tokenizer_file(directory: str) -> str | None:
  """tokenizer.json, else a *.tiktoken file, in `directory` or its `source_assets/`."""
  for folder in (os.path.join(directory, "source_assets"), directory):
    if os.path.isfile(os.path.join(folder, "tokenizer.json")):
      return os.path.join(folder, "tokenizer.json")
    found = sorted(glob.glob(os.path.join(folder, "*.tiktoken")))
    if found:
      return found[0]
  return None


def get_whisper_tokenizer(source: str, vocab_size: int | None = None) -> WhisperTokenizer:
  """The tokenizer of a converted checkpoint / transformers folder (directory), or of a tokenizer.json or
  .tiktoken file. `vocab_size` (default: the checkpoint's text decoder) is checked against the file's."""
  path, n_vocab = source, vocab_size
  if os.path.isdir(source):
    n_vocab = n_vocab or _checkpoint_vocab(source)
    path = find_tokenizer_file(source)
    if path is None:
      raise VocabFileError(f"{source}: no Whisper tokenizer (tokenizer.json or *.tiktoken) here or in "
                           "source_assets/; pass the file (e.g. openai-whisper's multilingual.tiktoken)")
  return _load(os.path.abspath(path), n_vocab)


@functools.lru_cache(maxsize=8)
def _load(path: str, n_vocab: int | None) -> WhisperTokenizer:
  if not os.path.isfile(path):
    raise VocabFileError(f"{path}: tokenizer file not found")
  if path.endswith(".tiktoken"):
    backend = _Tiktoken(path, n_vocab)
  elif path.endswith(".json"):
    backend = _TokenizerJson(path)
  else:
    raise VocabFileError(f"{path}: expected a tokenizer.json or a .tiktoken file")
  tok = WhisperTokenizer(backend, path)
  if n_vocab is not None and tok.vocab_size != n_vocab:
    raise VocabFileError(f"{path}: the tokenizer has {tok.vocab_size} ids but the model {n_vocab}")
  return tok
