"""What a converted Whisper checkpoint carries besides weights: its tokenizer file and generation record.

Tokenizer: a transformers folder's own tokenizer.json (copied with the other small files); for an openai
`.pt`, the `--tokenizer=PATH` given (a .tiktoken or tokenizer.json), else openai-whisper's
multilingual.tiktoken / gpt2.tiktoken when that package is installed (its files are located, never
imported: it imports torch). Generation record: `qwen_audio_jax/tokenizer/whisper_generation.py`.
"""

from __future__ import annotations

import importlib.util
import json
import os

from conversion.errors import ConversionError
from qwen_audio_jax.model.config import ModelConfig
from qwen_audio_jax.tokenizer import TokenizerError, get_whisper_tokenizer
from qwen_audio_jax.tokenizer import whisper_generation as gen


def openai_package_vocab(n_vocab: int) -> str | None:
  """openai-whisper's vocabulary for a model of `n_vocab` ids, if the package is installed."""
  spec = importlib.util.find_spec("whisper")
  if spec is None or not spec.submodule_search_locations:
    return None
  name = "multilingual.tiktoken" if n_vocab >= 51865 else "gpt2.tiktoken"
  path = os.path.join(list(spec.submodule_search_locations)[0], "assets", name)
  return path if os.path.isfile(path) else None


def tokenizer_file(flag: str, cfg: ModelConfig, given: str | None) -> str | None:
  """The tokenizer file to copy into source_assets/ (None: nothing beyond the source folder's files)."""
  if given is None:
    return openai_package_vocab(cfg.text_decoder.vocab_size) if flag == "openai-whisper" else None
  if not os.path.isfile(given) or not given.endswith((".tiktoken", ".json")):
    raise ConversionError(f"--tokenizer={given}: not a .tiktoken or tokenizer .json file")
  return given


def generation_record(flag: str, path: str, cfg: ModelConfig, tokenizer: str | None) -> dict:
  """metadata["generation"]; checks `tokenizer` against the model's vocabulary first (one-line error)."""
  text = cfg.text_decoder
  tok = None
  if tokenizer is not None:
    try:
      tok = get_whisper_tokenizer(tokenizer, text.vocab_size)
    except TokenizerError as e:
      raise ConversionError(f"--tokenizer: {e}")
  if flag == "hf-whisper":  # the folder's own record
    gpath = os.path.join(path, "generation_config.json")
    try:
      config = json.load(open(gpath)) if os.path.isfile(gpath) else {}
    except ValueError as e:
      raise ConversionError(f"{gpath}: not valid json ({e})")
    return gen.from_transformers(config, text.n_ctx)
  if tok is not None:
    return gen.from_tokenizer(tok, text.n_ctx)
  return gen.from_openai_dims(text.vocab_size, text.n_ctx)
