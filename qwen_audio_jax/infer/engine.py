"""The generation engine: bucketed, compiled-once decoding of prompt batches on a device mesh.

`Generator(cfg, params, mesh=...)` owns one model's compiled decode programs. `generate(prompts,
settings)` splits the prompts into batches, pads each to a (batch, prompt length, audio slots, mel
frames) bucket so that new request shapes reuse compiled executables, checks the audio placeholders
and the KV-cache size on the host before anything is compiled, runs prefill + the on-device decode
loop, and returns every row's generated ids and finish reason. `compiles` counts the executables
built so far (it stops growing once the buckets in use are warm).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import psutil
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from qwen_audio_jax.audio import lengths as audio_lengths
from qwen_audio_jax.data.batching import audio_features
from qwen_audio_jax.infer import beam, search, stopping
from qwen_audio_jax.infer.decode_fns import DecodeFns, decode_fns_for
from qwen_audio_jax.infer.settings import DecodeSettings, row_limits
from qwen_audio_jax.model import ModelConfig, check_audio_placeholders
from qwen_audio_jax.sharding import partition

log = logging.getLogger(__name__)

PROMPT_BUCKETS = (32, 64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192)
MEL_BUCKETS = (400, 800, 1600, 2400, 3000)
AUDIO_SLOT_BUCKETS = (1, 2, 4, 8, 16)
CACHE_HEADROOM = 1.25  # the decode loop holds the cache plus temporaries


class GenerationError(ValueError):
  """A request that cannot be decoded as asked (too long, does not fit in memory, ...): one line."""


@dataclasses.dataclass
class Prompt:
  """One row to decode: prompt ids (audio placeholders expanded) and the audio they refer to."""

  ids: np.ndarray
  waveforms: list = dataclasses.field(default_factory=list)  # ≤30 s 16 kHz float32 segments, in order
  encoder_frames: list = dataclasses.field(default_factory=list)  # T of each segment
  audio_seconds: float = 0.0  # true seconds of audio behind this row (for the per-second cap)
  row_seed: int = 0


@dataclasses.dataclass
class RowOutput:
  ids: list[int]  # generated ids, the stop token included
  reason: str  # stopping.REASONS
  score: float | None = None  # beam search: the finished hypothesis' score


def bucket(value: int, buckets: Sequence[int], what: str) -> int:
  for b in buckets:
    if value <= b:
      return int(b)
  raise GenerationError(f"generation: {what} of {value} exceeds the largest bucket {max(buckets)}")


def _batch_buckets(max_batch: int) -> tuple[int, ...]:
  """Powers of two from 2 up to max_batch (and max_batch). Never 1 row: XLA runs a one-row matmul as a
  matrix-vector product whose rounding differs from the matrix-matrix kernel used for 2+ rows, which
  would make a request's ids depend on its batch (seen in bf16); a second, empty row costs little."""
  sizes = [1 << i for i in range(1, max_batch.bit_length()) if (1 << i) < max_batch]
  return tuple(sizes + [max_batch])


def free_bytes(devices) -> int:
  """Smallest free memory over `devices` (accelerators: allocator stats; CPU: available host RAM)."""
  free = []
  for device in devices:
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
      free.append(int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)))
    else:
      free.append(int(psutil.virtual_memory().available))
  return min(free)


class Generator:
  """Compiled decoding for one model (see module docstring)."""

  def __init__(self, cfg: ModelConfig, params, *, mesh: Mesh | None = None, max_batch: int = 8,
               decode_fns: DecodeFns | None = None, pad_id: int | None = None, full_mel_window: bool = False,
               vocab_size: int | None = None, compile_cache: dict | None = None):
    self.cfg, self.params = cfg, params
    self.mesh = mesh or Mesh(np.asarray(jax.local_devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor"))
    self.max_batch = int(max_batch)
    self.fns = decode_fns or decode_fns_for(cfg)
    pad_id = cfg.pad_id if pad_id is None else int(pad_id)
    text = cfg.decoder if cfg.decoder is not None else cfg.text_decoder
    self.vocab_size = int(vocab_size or text.vocab_size)
    self.pad_id = pad_id if pad_id < self.vocab_size else 0  # tiny test vocabularies
    self.full_mel_window = full_mel_window or cfg.family == "whisper"  # Whisper attends to all 1500 frames
    # Executables take the params as an argument, so checkpoints of one config can share them.
    self._compiled: dict[tuple, jax.stages.Compiled] = {} if compile_cache is None else compile_cache
    self._built = 0

  @property
  def compiles(self) -> int:
    """Number of decode executables this generator compiled (not counting shared ones it reused)."""
    return self._built

  # --- batching --------------------------------------------------------------------------------
  def _collate(self, prompts: Sequence[Prompt], settings: DecodeSettings) -> tuple[dict, int]:
    rows = bucket(len(prompts), _batch_buckets(self.max_batch), "batch")
    if self.fns.padded_prompts:
      seq = bucket(max(len(p.ids) for p in prompts), PROMPT_BUCKETS, "prompt length (tokens)")
    else:
      lengths = sorted({len(p.ids) for p in prompts})
      if len(lengths) > 1:
        raise GenerationError(f"generation: this model needs prompts of one length per batch, got {lengths}")
      seq = lengths[0]
    ids = np.full((rows, seq), self.pad_id, np.int32)
    mask = np.zeros((rows, seq), np.int32)
    for r, p in enumerate(prompts):
      ids[r, seq - len(p.ids):], mask[r, seq - len(p.ids):] = p.ids, 1
    if not self.fns.padded_prompts:
      ids[len(prompts):] = prompts[0].ids  # empty rows: any valid prompt (their limit is 0)
    limits = row_limits(settings, [p.audio_seconds for p in prompts]) + [0] * (rows - len(prompts))
    seeds = [p.row_seed for p in prompts] + [0] * (rows - len(prompts))
    batch = {"input_ids": ids, "attention_mask": mask, "limit": np.asarray(limits, np.int32),
             "row_seed": np.asarray(seeds, np.uint32)}
    slots = max(len(p.waveforms) for p in prompts)
    if self.cfg.family == "whisper" and slots != 1:
      raise GenerationError("generation: Whisper rows take exactly one ≤30 s audio window each")
    if slots and self.cfg.encoder is not None:
      slots = bucket(slots, AUDIO_SLOT_BUCKETS, "audios per prompt")
      padded = list(prompts) + [None] * (rows - len(prompts))
      mel, lengths = audio_features(padded, slots, self.cfg.encoder.n_mels)
      frames = audio_lengths.N_FRAMES
      if not self.full_mel_window:  # per-clip results do not depend on frames past 2T + 2 (tested)
        need = min(audio_lengths.N_FRAMES, 2 * int(lengths.max()) + 2)
        frames = bucket(need, MEL_BUCKETS, "mel frames")
      batch["audio_mel"], batch["audio_lengths"] = np.ascontiguousarray(mel[..., :frames]), lengths
    return batch, seq

  def _check(self, batch: dict, seq: int, settings: DecodeSettings) -> None:
    if self.cfg.family in ("qwen-audio", "qwen2-audio"):
      check_audio_placeholders(batch["input_ids"], batch.get("audio_lengths"), self.cfg,
                               batch["audio_mel"].shape[-1] if "audio_mel" in batch else None)
    if self.fns.max_context is not None and seq + settings.max_new_tokens > self.fns.max_context:
      raise GenerationError(f"generation: {seq} prompt + {settings.max_new_tokens} new tokens exceed the model's "
                            f"{self.fns.max_context}-token context; lower max_new_tokens")
    rows = batch["input_ids"].shape[0] * settings.num_beams
    length = seq + settings.buffer_tokens
    if self.fns.max_context is not None:
      length = min(length, self.fns.max_context)
    need = self.fns.cache_bytes(batch["input_ids"].shape[0], length, settings.num_beams)
    need *= 2 if settings.strategy == "beam" else 1
    devices = list(self.mesh.devices.flat)
    share = max(1, len(devices)) if rows % len(devices) == 0 else 1
    have = free_bytes(devices)
    if need / share * CACHE_HEADROOM > have:
      raise GenerationError(
          f"generation: the KV cache for {rows} rows × {length} tokens ({self.cfg.dtype}) "
          f"needs {need / share / 2**30:.2f} GiB per device but only {have / 2**30:.2f} GiB is free; lower the "
          "batch size, num_beams or max_new_tokens")

  # --- compiling and running ------------------------------------------------------------------
  def _ctrl(self, settings: DecodeSettings) -> dict:
    ctrl = {"temperature": np.float32(settings.temperature), "top_k": np.int32(settings.top_k),
            "top_p": np.float32(settings.top_p), "seed": np.int32(settings.seed),
            "max_new_tokens": np.int32(settings.max_new_tokens),
            "length_penalty": np.float32(settings.length_penalty)}
    if settings.suppress_ids or settings.vocab_limit:
      vocab = self.vocab_size
      mask = np.zeros((vocab,), bool)
      mask[[i for i in settings.suppress_ids if i < vocab]] = True
      if settings.vocab_limit:
        mask[settings.vocab_limit:] = True
      ctrl["suppress"] = mask
    if settings.begin_suppress_ids:
      begin = np.zeros((self.vocab_size,), bool)
      begin[[i for i in settings.begin_suppress_ids if i < self.vocab_size]] = True
      ctrl["begin_suppress"] = begin
    return ctrl

  def _place(self, tree):
    """Host arrays -> arrays on the mesh (rows split over the batch axes when they divide). Every
    process must pass the same values when the mesh spans processes (training-time evaluation)."""
    rows_axis = math.prod(self.mesh.shape[a] for a in partition.BATCH_AXES)
    replicated = NamedSharding(self.mesh, P())

    def put(x):
      x = np.asarray(x)
      sharded = x.ndim >= 1 and x.shape[0] % rows_axis == 0 and rows_axis > 1
      sharding = partition.batch_sharding(self.mesh) if sharded else replicated
      return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
    return jax.tree_util.tree_map(put, tree)

  def _executable(self, batch, ctrl, settings: DecodeSettings):
    shapes = tuple(sorted((k, v.shape, str(v.dtype)) for k, v in {**batch, **ctrl}.items()))
    key = (self.cfg, self.mesh, self.pad_id, shapes, settings.static_key())
    if key not in self._compiled:
      run = beam.decode if settings.strategy == "beam" else search.decode
      fn = functools.partial(run, self.fns, settings)
      t0 = time.time()
      with partition.activation_context(self.mesh):
        jitted = jax.jit(lambda p, b, c: fn(p, b, c, self.pad_id), out_shardings=NamedSharding(self.mesh, P()))
        self._compiled[key] = jitted.lower(self.params, batch, ctrl).compile()
      self._built += 1
      log.info("compiled generate (%s, batch %s, prompt %d, new tokens %d%s) in %.1f s; %d executables",
               settings.strategy, batch["input_ids"].shape[0], batch["input_ids"].shape[1],
               settings.buffer_tokens,
               f", mel {batch['audio_mel'].shape}" if "audio_mel" in batch else "", time.time() - t0,
               len(self._compiled))
    return self._compiled[key]

  def generate(self, prompts: Sequence[Prompt], settings: DecodeSettings) -> list[RowOutput]:
    """Decodes every prompt (in batches of at most max_batch, order kept)."""
    out: list[RowOutput] = []
    for start in range(0, len(prompts), self.max_batch):
      chunk = list(prompts[start:start + self.max_batch])
      batch, seq = self._collate(chunk, settings)
      self._check(batch, seq, settings)
      batch, ctrl = self._place(batch), self._place(self._ctrl(settings))
      executable = self._executable(batch, ctrl, settings)
      with partition.activation_context(self.mesh):
        result = jax.device_get(executable(self.params, batch, ctrl))
      for r in range(len(chunk)):
        n = int(result["lengths"][r])
        score = float(result["scores"][r]) if "scores" in result else None
        out.append(RowOutput(ids=[int(i) for i in result["tokens"][r, :n]],
                             reason=stopping.REASONS[int(result["reasons"][r])], score=score))
    return out
