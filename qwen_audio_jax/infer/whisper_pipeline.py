"""Whisper checkpoints (converted with their text decoder) transcribe and translate through the same engine.

  pipe = Pipeline.from_checkpoint("ckpt/whisper-large-v3")     # returns a WhisperPipeline
  [r] = pipe.generate(["a.flac"], task="asr", language="en")    # or task="s2tt" (Whisper: into English)
Prompt `<|startoftranscript|><|lang|><|transcribe|translate|><|notimestamps|>` from the checkpoint's own
tokenizer (tokenizer.json or .tiktoken kept by the converter, never downloaded); suppressed and
begin-suppressed ids and the end id from the checkpoint's generation record, as transformers' `generate`
uses them. Each ≤30 s window is a row; policy "chunk" decodes every window and stitches the text.
"""

from __future__ import annotations

from typing import Any, Sequence

from qwen_audio_jax import checkpoint_io
from qwen_audio_jax.infer import requests as requests_lib
from qwen_audio_jax.infer.engine import GenerationError, Generator, Prompt
from qwen_audio_jax.infer.pipeline import local_mesh
from qwen_audio_jax.infer.results import Result, make_result
from qwen_audio_jax.infer.settings import DecodeSettings
from qwen_audio_jax.model import abstract_params, logical_axes
from qwen_audio_jax.sharding import partition
from qwen_audio_jax.tokenizer.whisper import get_whisper_tokenizer, whisper_prompt
from qwen_audio_jax.tokenizer.whisper_generation import read_generation

WHISPER_TASKS = {"asr": "transcribe", "s2tt": "translate"}
DEFAULT_MAX_NEW_TOKENS = 224  # openai-whisper's sample_len: half the 448-token context


class WhisperPipeline:
  """A Whisper checkpoint with its tokenizer and compiled generation (see module docstring)."""

  def __init__(self, cfg, params, tokenizer, generation: dict, *, mesh=None, max_batch: int = 8,
               long_audio: str = "error", chunk_overlap_s: float = 0.0, compile_cache: dict | None = None):
    if cfg.text_decoder is None:
      raise GenerationError("inference: this Whisper checkpoint has no text decoder (converted encoder-only); "
                            "convert it again to transcribe")
    self.cfg, self.tokenizer, self.generation = cfg, tokenizer, generation
    self.long_audio, self.chunk_overlap_s = long_audio, float(chunk_overlap_s)
    self._params, self._mesh, self._max_batch, self._cache = params, mesh, max_batch, compile_cache
    self._generator: Generator | None = None
    self.variant, self.supports_chat = "base", False

  @classmethod
  def from_checkpoint(cls, path: str, *, dtype: str | None = None, mesh_shape: Sequence[int] = (1, -1, 1),
                      max_batch: int = 8, long_audio: str = "error", chunk_overlap_s: float = 0.0,
                      vocab_path: str | None = None, compile_cache: dict | None = None, **unused) -> "WhisperPipeline":
    del unused
    cfg = checkpoint_io.read_config(path)
    if dtype is not None:
      cfg = cfg.replace(dtype=dtype, param_dtype=dtype)
    vocab = cfg.text_decoder.vocab_size if cfg.text_decoder is not None else None
    tokenizer = get_whisper_tokenizer(vocab_path or path, vocab_size=vocab)
    mesh = local_mesh(mesh_shape)
    shardings = partition.logical_to_shardings(logical_axes(cfg), abstract_params(cfg), mesh)

    def load():
      return checkpoint_io.load_model_checkpoint(path, shardings=shardings, dtype=dtype)[1]

    return cls(cfg, load, tokenizer, read_generation(path), mesh=mesh, max_batch=max_batch, long_audio=long_audio,
               chunk_overlap_s=chunk_overlap_s, compile_cache=compile_cache)

  @property
  def generator(self) -> Generator:
    if self._generator is None:
      params = self._params() if callable(self._params) else self._params
      self._generator = Generator(self.cfg, params, mesh=self._mesh, max_batch=self._max_batch,
                                  pad_id=self.tokenizer.eot, compile_cache=self._cache)
    return self._generator

  @property
  def compiles(self) -> int:
    return 0 if self._generator is None else self._generator.compiles

  def settings(self, mode: str = "base", task: str | None = None, **overrides) -> DecodeSettings:
    del mode, task
    g = self.generation
    values = {"eos_ids": (self.tokenizer.eot,), "max_new_tokens": DEFAULT_MAX_NEW_TOKENS,
              "suppress_ids": tuple(g.get("suppress_tokens") or ()),
              "begin_suppress_ids": tuple(g.get("begin_suppress_tokens") or ())}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    temperature = float(overrides.pop("temperature", 0.0))
    overrides.setdefault("strategy", "beam" if overrides.get("num_beams", 1) > 1 else
                         "sample" if temperature > 0 else "greedy")
    if temperature > 0:
      values["temperature"] = temperature
    values.update(overrides)
    return DecodeSettings(**values)

  def generate(self, audios: Sequence[Any], *, task: str | None = "asr", prompt: str | None = None,
               language: str = "en", target_language: str | None = None, question: str | None = None,
               **decode) -> list[Result]:
    """One transcript (task asr) or English translation (task s2tt) per audio."""
    if prompt is not None or task not in WHISPER_TASKS:
      raise GenerationError(f"Whisper checkpoints take --task=asr or --task=s2tt (into English), got "
                            f"{'a raw prompt' if prompt is not None else repr(task)}")
    if task == "s2tt" and target_language not in (None, "en"):
      raise GenerationError(f"Whisper translates into English only, not {target_language!r}")
    del question
    ids = whisper_prompt(self.tokenizer, language=language, task=WHISPER_TASKS[task], timestamps=False)
    settings = self.settings(task=task, **decode)
    groups = []
    for k, audio in enumerate(audios):
      segments, info = requests_lib.load_clip(audio, self.long_audio, "whisper", self.chunk_overlap_s)
      groups.append([requests_lib.Row(Prompt(ids=list(ids), waveforms=[seg], encoder_frames=[w.encoder_frames],
                                             audio_seconds=w.duration_s), k, j, info, "")
                     for j, (seg, w) in enumerate(zip(segments, info.windows))])
    rows = [r for g in groups for r in g]
    outs = self.generator.generate([r.prompt for r in rows], settings)
    text_of = lambda o: self.tokenizer.decode([i for i in o.ids if i != self.tokenizer.eot],
                                              skip_special_tokens=True).strip()
    results, k = [], 0
    for group in groups:
      results.append(make_result(group, outs[k:k + len(group)], text_of, settings=settings.as_record(),
                                 want_words=False))
      k += len(group)
    return results

  def chat(self, messages, **decode):
    raise GenerationError("Whisper checkpoints have no chat mode; use --task=asr or --task=s2tt")
