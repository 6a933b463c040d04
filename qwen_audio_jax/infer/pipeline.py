"""The Python API: a checkpoint in, answers out.

  pipe = Pipeline.from_checkpoint("ckpt/qwen-audio")            # family read from the checkpoint
  pipe.generate(["a.flac", "b.wav"], task="asr", language="en")  # base model, Qwen-Audio tag prompts
  pipe.generate(["a.flac"], prompt="<audio>a.flac</audio><|startoftranscript|>...")   # raw prompt
  pipe.chat([{"role": "user", "content": [{"audio": "a.flac"}, {"text": "What is said?"}]}])
Decode options (`max_new_tokens`, `num_beams`, `temperature`, `top_k`, `top_p`, `seed`, ...) are
`DecodeSettings` fields; unset ones come from the task (its eval script's budget) and the family (its
end tokens). Every `Result` records the settings, the clip's true duration and whether it was cut.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Sequence

import jax

from qwen_audio_jax import checkpoint_io
from qwen_audio_jax.data.examples import ExampleEncoder
from qwen_audio_jax.infer import requests as requests_lib
from qwen_audio_jax.infer.engine import Generator, GenerationError
from qwen_audio_jax.infer.results import Result, make_result, row_text
from qwen_audio_jax.infer.settings import DecodeSettings
from qwen_audio_jax.model import ModelConfig, logical_axes
from qwen_audio_jax.prompts import TASKS
from qwen_audio_jax.sharding import mesh as mesh_lib, partition

LLM_FAMILIES = ("qwen-audio", "qwen2-audio")  # plus "whisper" through WhisperPipeline
DEFAULT_MAX_NEW_TOKENS = {"raw": 256, "chat": 512}


def tokenizer_spec(directory: str, meta: Mapping[str, Any], cfg: ModelConfig) -> tuple[str, str | None]:
  """(family, vocab path or None) of a checkpoint's tokenizer, from its metadata."""
  info = dict(meta.get("tokenizer") or {})
  family = info.get("family") or cfg.family
  vocab = info.get("vocab_path")
  if vocab and not os.path.isabs(vocab):
    vocab = os.path.join(directory, vocab)
  return family, vocab


def local_mesh(shape: Sequence[int]):
  """A (data, fsdp, tensor) mesh over this process's devices: all of them when `shape` has a -1, else the
  first prod(shape) (e.g. (1, 1, 1): one device). Each process decodes on its own devices."""
  devices = jax.local_devices()
  if -1 not in tuple(shape):
    devices = devices[:max(1, math.prod(shape))]
  return mesh_lib.make_mesh(tuple(shape), devices=devices)


def variant_of(directory: str) -> str:
  """"chat" when the source's generation config says ChatML (Qwen-Audio-Chat), else "base"."""
  path = os.path.join(directory, checkpoint_io.ASSETS_DIR, "generation_config.json")
  if os.path.exists(path):
    with open(path) as f:
      if json.load(f).get("chat_format") == "chatml":
        return "chat"
  return "base"


class Pipeline:
  """A loaded model with its tokenizer and compiled generation (see module docstring)."""

  def __init__(self, cfg: ModelConfig, params, *, tokenizer_family: str, vocab_path: str | None = None,
               mesh=None, max_batch: int = 8, long_audio: str = "error", chunk_overlap_s: float = 0.0,
               variant: str = "base", compile_cache: dict | None = None):
    if cfg.family not in LLM_FAMILIES:
      raise GenerationError(f"inference: checkpoint family {cfg.family!r} cannot generate text with this "
                            f"pipeline (families: {', '.join(LLM_FAMILIES)})")
    self.cfg, self.variant = cfg, variant
    self.long_audio, self.chunk_overlap_s = long_audio, float(chunk_overlap_s)
    self.encoder = ExampleEncoder(family=tokenizer_family, vocab_path=vocab_path, long_audio=long_audio)
    self.tokenizer = self.encoder.tokenizer
    if self.tokenizer.vocab_size > cfg.decoder.vocab_size:
      raise GenerationError(f"inference: tokenizer has {self.tokenizer.vocab_size} ids but the model only "
                            f"{cfg.decoder.vocab_size} (wrong tokenizer for this checkpoint?)")
    self._params, self._mesh, self._max_batch, self._cache = params, mesh, max_batch, compile_cache
    self._generator: Generator | None = None
    self.supports_chat = True

  @property
  def generator(self) -> Generator:
    """The compiled-generation engine; `params` may be a loader, called here (after the requests were
    checked, so bad input never waits for a 7B checkpoint to load)."""
    if self._generator is None:
      params = self._params() if callable(self._params) else self._params
      self._generator = Generator(self.cfg, params, mesh=self._mesh, max_batch=self._max_batch,
                                  pad_id=self.tokenizer.pad_id, compile_cache=self._cache)
    return self._generator

  @classmethod
  def from_checkpoint(cls, path: str, *, dtype: str | None = None, mesh_shape: Sequence[int] = (1, -1, 1),
                      max_batch: int = 8, long_audio: str = "error", chunk_overlap_s: float = 0.0,
                      vocab_path: str | None = None, variant: str | None = None,
                      compile_cache: dict | None = None) -> "Pipeline":
    """Loads a converted checkpoint, sharded over this process's devices with the training rule table.
    Whisper checkpoints give a `WhisperPipeline` (same `generate`)."""
    cfg = checkpoint_io.read_config(path)
    meta = checkpoint_io.read_metadata(path)
    if cfg.family == "whisper":
      from qwen_audio_jax.infer.whisper_pipeline import WhisperPipeline  # pylint: disable=import-outside-toplevel
      return WhisperPipeline.from_checkpoint(path, dtype=dtype, mesh_shape=mesh_shape, max_batch=max_batch,
                                             long_audio=long_audio, chunk_overlap_s=chunk_overlap_s,
                                             vocab_path=vocab_path, compile_cache=compile_cache)
    if cfg.family not in LLM_FAMILIES:
      raise GenerationError(f"{path}: a {cfg.family} checkpoint cannot generate text with this pipeline "
                            f"(families: {', '.join(LLM_FAMILIES)})")
    if dtype is not None:
      cfg = cfg.replace(dtype=dtype, param_dtype=dtype)
    mesh = local_mesh(mesh_shape)
    from qwen_audio_jax.model import abstract_params  # pylint: disable=import-outside-toplevel
    shardings = partition.logical_to_shardings(logical_axes(cfg), abstract_params(cfg), mesh)
    checkpoint_io.check_shapes({p: s for p, (s, _) in checkpoint_io.stored_shapes(path).items()}, cfg, path)

    def load():
      return checkpoint_io.load_model_checkpoint(path, shardings=shardings, dtype=dtype)[1]

    family, vocab = tokenizer_spec(path, meta, cfg)
    return cls(cfg, load, tokenizer_family=family, vocab_path=vocab_path or vocab, mesh=mesh,
               max_batch=max_batch, long_audio=long_audio, chunk_overlap_s=chunk_overlap_s,
               variant=variant or variant_of(path), compile_cache=compile_cache)

  @property
  def compiles(self) -> int:
    return 0 if self._generator is None else self._generator.compiles

  # --- settings --------------------------------------------------------------------------------
  def settings(self, mode: str, task: str | None = None, **overrides) -> DecodeSettings:
    """Decode settings for a request: the task's token budget and the family's end tokens, then overrides."""
    tok = self.tokenizer
    if mode == "chat":
      eos = (tok.im_end_id, tok.eod_id) if self.cfg.family == "qwen2-audio" else (tok.eod_id, tok.im_end_id,
                                                                                   tok.im_start_id)
    else:
      eos = (tok.eod_id, tok.im_end_id) if self.cfg.family == "qwen2-audio" else (tok.eod_id,)
    budget = TASKS[task].max_new_tokens if task else DEFAULT_MAX_NEW_TOKENS[mode]
    values = {"eos_ids": eos, "max_new_tokens": budget}
    if tok.vocab_size < self.cfg.decoder.vocab_size:
      values["vocab_limit"] = tok.vocab_size
    overrides = {k: v for k, v in overrides.items() if v is not None}
    temperature = float(overrides.pop("temperature", 0.0))
    if "strategy" not in overrides:  # num_beams > 1 -> beam search; temperature > 0 -> sampling
      overrides["strategy"] = ("beam" if overrides.get("num_beams", 1) > 1 else
                               "sample" if temperature > 0 else "greedy")
    if temperature > 0:
      values["temperature"] = temperature
    values.update(overrides)
    return DecodeSettings(**values)

  # --- requests --------------------------------------------------------------------------------
  def generate(self, audios: Sequence[Any], *, task: str | None = None, prompt: str | None = None,
               language: str = "en", target_language: str | None = None, question: str | None = None,
               **decode) -> list[Result]:
    """One answer per audio (task prompts), or one answer for a raw `prompt` using all `audios`."""
    if (task is None) == (prompt is None):
      raise GenerationError("give exactly one of task= (tag/natural prompts) or prompt= (raw prompt text)")
    if prompt is not None:
      settings = self.settings("raw", None, **decode)
      row = requests_lib.raw_rows(self.encoder, prompt, list(audios), 0, self.long_audio)
      return self._run([[row]], settings, chat=False, words=False)
    fields = requests_lib.task_fields_for(task, language, target_language, question)
    settings = self.settings("base", task, **decode)
    groups = [requests_lib.task_rows(self.encoder, audio, k, task, fields, self.long_audio, self.chunk_overlap_s)
              for k, audio in enumerate(audios)]
    return self._run(groups, settings, chat=False, words=task == "srwt")

  def chat(self, messages: Sequence[Mapping[str, Any]], **decode) -> Result:
    """The assistant's next reply to `messages` ([{"role", "content"}], content str or audio/text items)."""
    settings = self.settings("chat", None, **decode)
    row = requests_lib.chat_row(self.encoder, messages, 0, self.long_audio)
    return self._run([[row]], settings, chat=True, words=False)[0]

  def _run(self, groups, settings: DecodeSettings, *, chat: bool, words: bool) -> list[Result]:
    rows = [row for group in groups for row in group]
    outs = self.generator.generate([r.prompt for r in rows], settings)
    results, k = [], 0
    for group in groups:
      results.append(make_result(group, outs[k:k + len(group)], lambda o: row_text(o, self.tokenizer, chat),
                                 settings=settings.as_record(), want_words=words))
      k += len(group)
    return results


__all__ = ["DecodeSettings", "GenerationError", "Pipeline", "Result"]
