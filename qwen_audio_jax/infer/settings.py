"""Decoding settings: one frozen dataclass, validated once, recorded with every result.

Which fields are static (part of the compiled program) and which are traced (change them freely
without recompiling) is decided by `static_key` / `traced`: the strategy, beam count, stop ids and the
guard's shape are static; temperature, top-k, top-p, length penalty, seeds and token limits are traced.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

STRATEGIES = ("greedy", "sample", "beam")
EARLY_STOPPING = (False, True, "never")
NEW_TOKEN_BUCKET = 32  # the token buffer is max_new_tokens rounded up to a multiple of this


class DecodeSettingsError(ValueError):
  """A decoding setting out of range (one line naming the setting)."""


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
  """How to decode.

  strategy         "greedy" (argmax), "sample" (temperature / top-k / top-p), "beam" (num_beams).
  max_new_tokens   upper bound on generated tokens per row (the stop token included).
  temperature      > 0 for sampling; ignored by greedy and beam.
  top_k, top_p     sampling filters (0 / 1.0 = off).
  seed             sampling seed; each row draws from its own stream (fold_in(seed, row seed, step)),
                   so a row's sample does not depend on what else is in the batch.
  num_beams, length_penalty, early_stopping   beam search, exactly as transformers' `generate`.
  eos_ids          single tokens that end a row (kept in `ids`, dropped from `text`).
  stop_sequences   multi-token sequences that end a row (e.g. ChatML `<|im_end|>`), kept in `ids`.
  max_new_tokens_per_second, min_new_tokens_cap   with audio, a row stops after
                   max(min_new_tokens_cap, ceil(rate × seconds of audio)) tokens ("audio_cap" reason);
                   0 disables the cap.
  loop_guard_tokens  a row stops ("loop" reason) when its last `loop_guard_tokens` tokens repeat a
                   pattern of period <= loop_guard_max_period; 0 disables the guard.
  suppress_ids     ids never generated (e.g. Whisper's suppress_tokens).
  begin_suppress_ids  ids not generated as the first new token (Whisper's begin_suppress_tokens).
  vocab_limit      ids >= vocab_limit are never generated (model rows the tokenizer does not have,
                   e.g. Qwen-Audio's 155165..155946); 0 = no limit.
  """

  strategy: str = "greedy"
  max_new_tokens: int = 256
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  seed: int = 0
  num_beams: int = 1
  length_penalty: float = 1.0
  early_stopping: Any = False
  eos_ids: tuple[int, ...] = ()
  stop_sequences: tuple[tuple[int, ...], ...] = ()
  max_new_tokens_per_second: float = 0.0
  min_new_tokens_cap: int = 16
  loop_guard_tokens: int = 0
  loop_guard_max_period: int = 8
  suppress_ids: tuple[int, ...] = ()
  begin_suppress_ids: tuple[int, ...] = ()
  vocab_limit: int = 0

  def __post_init__(self):
    object.__setattr__(self, "eos_ids", tuple(int(i) for i in self.eos_ids))
    object.__setattr__(self, "stop_sequences", tuple(tuple(int(i) for i in s) for s in self.stop_sequences))
    object.__setattr__(self, "suppress_ids", tuple(sorted({int(i) for i in self.suppress_ids})))
    object.__setattr__(self, "begin_suppress_ids", tuple(sorted({int(i) for i in self.begin_suppress_ids})))
    validate(self)

  def replace(self, **changes) -> "DecodeSettings":
    return dataclasses.replace(self, **changes)

  @property
  def buffer_tokens(self) -> int:
    """Static length of the generated-token buffer (compiled programs are shared within a bucket)."""
    return NEW_TOKEN_BUCKET * math.ceil(self.max_new_tokens / NEW_TOKEN_BUCKET)

  def static_key(self) -> tuple:
    """What the compiled decode program depends on (besides the batch shapes)."""
    return (self.strategy, self.buffer_tokens, self.num_beams if self.strategy == "beam" else 1,
            str(self.early_stopping) if self.strategy == "beam" else "", self.eos_ids, self.stop_sequences,
            self.loop_guard_tokens, self.loop_guard_max_period)

  def as_record(self) -> dict:
    """JSON-able dict of every setting (written next to every result)."""
    return {f.name: (list(map(list, v)) if f.name == "stop_sequences" else
                     list(v) if isinstance(v, tuple) else v)
            for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}


def validate(s: DecodeSettings) -> None:
  def bad(name, why):
    raise DecodeSettingsError(f"decode setting {name}={getattr(s, name)!r}: {why}")
  if s.strategy not in STRATEGIES:
    bad("strategy", f"use one of {STRATEGIES}")
  if not isinstance(s.max_new_tokens, int) or s.max_new_tokens < 1:
    bad("max_new_tokens", "must be an integer >= 1")
  if s.strategy == "sample" and not s.temperature > 0:
    bad("temperature", "must be > 0 for sampling (use strategy greedy for argmax)")
  if s.top_k < 0:
    bad("top_k", "must be >= 0 (0 = off)")
  if not 0.0 < s.top_p <= 1.0:
    bad("top_p", "must be in (0, 1]")
  if s.num_beams < 1 or (s.strategy == "beam" and s.num_beams < 2):
    bad("num_beams", "must be >= 2 for beam search (1 otherwise)")
  if s.strategy != "beam" and s.num_beams != 1:
    bad("num_beams", f"needs strategy 'beam' (got {s.strategy!r})")
  if s.early_stopping not in EARLY_STOPPING:
    bad("early_stopping", f"use one of {EARLY_STOPPING}")
  if any(len(seq) == 0 for seq in s.stop_sequences):
    bad("stop_sequences", "an empty stop sequence would stop immediately")
  if s.max_new_tokens_per_second < 0 or s.min_new_tokens_cap < 1:
    bad("max_new_tokens_per_second", "must be >= 0 with min_new_tokens_cap >= 1")
  if s.loop_guard_tokens < 0 or (s.loop_guard_tokens and s.loop_guard_tokens < 2 * s.loop_guard_max_period):
    bad("loop_guard_tokens", f"must be 0 (off) or >= 2 × loop_guard_max_period ({2 * s.loop_guard_max_period})")
  if not s.eos_ids and not s.stop_sequences:
    bad("eos_ids", "give at least one end-of-sequence id or stop sequence")


def row_limits(settings: DecodeSettings, audio_seconds: Sequence[float]) -> list[int]:
  """Per-row new-token limit: max_new_tokens, lowered by the per-second audio cap for rows with audio."""
  limits = []
  for seconds in audio_seconds:
    limit = settings.max_new_tokens
    if settings.max_new_tokens_per_second > 0 and seconds > 0:
      cap = max(settings.min_new_tokens_cap, math.ceil(settings.max_new_tokens_per_second * seconds))
      limit = min(limit, cap)
    limits.append(int(limit))
  return limits
