"""The >30 s policy (`error | truncate | chunk`), never silent, and the per-clip record it produces.

Qwen-Audio sees at most 30 s per `<audio>` (480 000 samples, 750 tokens). The reference silently keeps
the first 30 s; here the caller chooses:
  "error"    raise `AudioError` naming the duration and the 30 s limit (default);
  "truncate" keep the first 30 s, warn, and record `truncated=True`;
  "chunk"    30 s windows every 30 - overlap_s seconds (the last one shorter), each with its offset;
             with overlap_s > 0 consecutive windows share overlap_s seconds (callers de-duplicate).
Every clip's `ClipInfo` carries its true duration and the token arithmetic of `lengths.py` per window.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Literal

import numpy as np

from qwen_audio_jax.audio import lengths
from qwen_audio_jax.audio.lengths import CHUNK_SECONDS, N_SAMPLES, SAMPLE_RATE
from qwen_audio_jax.audio.load import AudioError, check_waveform, load_audio, resample, source_name
from qwen_audio_jax.audio.mel import log_mel_spectrogram, pad_or_trim

Policy = Literal["error", "truncate", "chunk"]
POLICIES = ("error", "truncate", "chunk")


@dataclasses.dataclass(frozen=True)
class ClipWindow:
  """One ≤30 s window fed to the encoder, with its audio-token arithmetic (spec §1.4)."""

  offset_s: float  # start of the window in the original clip
  n_samples: int  # valid (unpadded) samples in the window
  mel_frames: int
  encoder_frames: int  # T
  audio_tokens: int  # n (without audio bos/eos)

  @property
  def duration_s(self) -> float:
    return self.n_samples / SAMPLE_RATE


@dataclasses.dataclass(frozen=True)
class ClipInfo:
  """What happened to one clip: true length, policy applied, and the windows produced."""

  source: str
  duration_s: float  # true duration of the input
  n_samples: int  # true samples of the input (16 kHz)
  policy: str
  truncated: bool
  windows: tuple[ClipWindow, ...]

  @property
  def n_chunks(self) -> int:
    return len(self.windows)

  @property
  def offsets_s(self) -> tuple[float, ...]:
    return tuple(w.offset_s for w in self.windows)

  @property
  def processed_duration_s(self) -> float:
    return sum(w.duration_s for w in self.windows)

  def as_record(self) -> dict:
    """Flat dict for logs and per-sample eval dumps."""
    record = dataclasses.asdict(self)
    record.update(n_chunks=self.n_chunks, processed_duration_s=self.processed_duration_s)
    return record


def _window(start: int, n_samples: int, family: str) -> ClipWindow:
  mel = lengths.mel_frames(n_samples, family)
  return ClipWindow(offset_s=start / SAMPLE_RATE, n_samples=n_samples, mel_frames=mel,
                    encoder_frames=lengths.encoder_frames(mel),
                    audio_tokens=lengths.audio_tokens(n_samples, family))


def prepare_clip(audio: np.ndarray, policy: Policy = "error", source: str = "<array>",
                 family: str = "qwen-audio", overlap_s: float = 0.0) -> tuple[list[np.ndarray], ClipInfo]:
  """Splits 16 kHz mono audio into ≤30 s segments under `policy`; returns (segments, info).

  Segments are unpadded views of `audio`; `log_mel_spectrogram` pads each to 30 s. `family` selects the
  model family's mel-frame rounding for the per-window token arithmetic (see `lengths.mel_frames`).
  `overlap_s` (policy "chunk" only): seconds shared by consecutive windows, in [0, 15].
  """
  if policy not in POLICIES:
    raise ValueError(f"unknown long-audio policy {policy!r}; use one of {POLICIES}")
  if not 0.0 <= overlap_s <= CHUNK_SECONDS / 2:
    raise ValueError(f"chunk overlap {overlap_s} s must be in [0, {CHUNK_SECONDS / 2}]")
  audio = check_waveform(audio, source)
  total = audio.shape[0]
  duration = total / SAMPLE_RATE
  too_long = total > N_SAMPLES
  if too_long and policy == "error":
    raise AudioError(f"{source}: audio is {duration:.2f} s, over the {CHUNK_SECONDS} s limit "
                     "(choose the long-audio policy 'truncate' or 'chunk', e.g. --long_audio=chunk)")
  if too_long and policy == "truncate":
    warnings.warn(f"{source}: {duration:.2f} s audio truncated to the first {CHUNK_SECONDS} s",
                  stacklevel=2)
  stop = N_SAMPLES if policy == "truncate" else total
  hop = N_SAMPLES - int(round(overlap_s * SAMPLE_RATE)) if policy == "chunk" else N_SAMPLES
  starts = [0]
  while starts[-1] + N_SAMPLES < min(stop, total):
    starts.append(starts[-1] + hop)
  segments = [audio[s:min(s + N_SAMPLES, stop)] for s in starts]
  info = ClipInfo(source=source, duration_s=duration, n_samples=total, policy=policy,
                  truncated=too_long and policy == "truncate",
                  windows=tuple(_window(s, seg.shape[0], family) for s, seg in zip(starts, segments)))
  return segments, info


def features_for_clip(clip, n_mels: int = 80, policy: Policy = "error",
                      sample_rate: int | None = None, family: str = "qwen-audio"):
  """Path/bytes/file or array -> (log-mel [k, n_mels, 3000] float32 jax array, ClipInfo).

  Arrays must state their `sample_rate` (resampled to 16 kHz if needed): a missing rate is an error,
  never an assumption. Decoded files are always resampled to 16 kHz.
  """
  name = source_name(clip)
  if isinstance(clip, np.ndarray):
    if sample_rate is None:
      raise AudioError(f"{name}: pass sample_rate= for raw arrays (it is never assumed)")
    audio = resample(check_waveform(clip, name), int(sample_rate))
  else:
    audio = load_audio(clip)
  segments, info = prepare_clip(audio, policy=policy, source=name, family=family)
  batch = np.stack([pad_or_trim(seg, N_SAMPLES) for seg in segments])
  return log_mel_spectrogram(batch, n_mels=n_mels), info
