"""Decode audio files to 16 kHz mono float32 without ffmpeg (spec §1.2, done in-process).

soundfile (libsndfile: wav, flac, ogg/vorbis/opus, mp3, aiff, ...) decodes; librosa's audioread path is
the fallback for paths soundfile cannot read, restricted to audioread's in-process backends (its
ffmpeg backend is never used). Channels are averaged to mono and resampled with soxr ('soxr_hq').
Every failure raises `AudioError` with one line naming the source and the cause.
"""

from __future__ import annotations

import io
import os
import pathlib
import warnings
from typing import BinaryIO, Union

import librosa
import numpy as np
import soundfile

from qwen_audio_jax.audio.lengths import SAMPLE_RATE

AudioSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]
RESAMPLE_TYPE = "soxr_hq"


class AudioError(ValueError):
  """Audio that cannot be used: missing, undecodable, empty, non-finite or over a length limit."""


def source_name(source) -> str:
  """How a source is named in messages: its path, '<bytes>', or a file object's name."""
  if isinstance(source, (str, os.PathLike)):
    return os.fspath(source)
  if isinstance(source, (bytes, bytearray, memoryview)):
    return "<bytes>"
  if isinstance(source, np.ndarray):
    return "<array>"
  return str(getattr(source, "name", f"<{type(source).__name__}>"))


def check_waveform(audio: np.ndarray, source: str) -> np.ndarray:
  """Returns `audio` as 1-D float32 after rejecting empty, multi-dimensional or non-finite input."""
  audio = np.asarray(audio)
  if audio.ndim != 1:
    raise AudioError(f"{source}: expected mono audio of shape [samples], got shape {audio.shape}")
  if audio.size == 0:
    raise AudioError(f"{source}: audio has zero samples")
  if not np.issubdtype(audio.dtype, np.floating):
    raise AudioError(f"{source}: expected float samples in [-1, 1], got dtype {audio.dtype}")
  bad = ~np.isfinite(audio)
  if bad.any():
    first = int(np.argmax(bad))
    raise AudioError(f"{source}: {int(bad.sum())} NaN/Inf samples (first at index {first})")
  return audio.astype(np.float32, copy=False)


def resample(audio: np.ndarray, orig_sr: int, sr: int = SAMPLE_RATE) -> np.ndarray:
  """Resamples mono float audio from `orig_sr` to `sr` with soxr_hq (no-op when equal)."""
  if orig_sr == sr:
    return audio.astype(np.float32, copy=False)
  out = librosa.resample(audio, orig_sr=orig_sr, target_sr=sr, res_type=RESAMPLE_TYPE)
  return out.astype(np.float32, copy=False)


def _decode_soundfile(source) -> tuple[np.ndarray, int]:
  """[samples, channels] float32 and the native rate, via libsndfile."""
  if isinstance(source, (bytes, bytearray, memoryview)):
    source = io.BytesIO(bytes(source))
  data, native_sr = soundfile.read(source, dtype="float32", always_2d=True)
  return data, native_sr


def _decode_audioread(path: str) -> tuple[np.ndarray, int]:
  """Fallback through librosa + audioread, never with audioread's ffmpeg subprocess backend."""
  import audioread  # librosa dependency; imported lazily because only the fallback needs it
  from audioread import ffdec

  backends = [b for b in audioread.available_backends() if b is not ffdec.FFmpegAudioFile]
  with audioread.audio_open(path, backends=backends) as reader, warnings.catch_warnings():
    warnings.simplefilter("ignore")  # librosa deprecates audioread but still supports it
    data, native_sr = librosa.load(reader, sr=None, mono=False, dtype=np.float32)
  data = np.atleast_2d(data).T  # librosa: [channels, samples] -> [samples, channels]
  return data, int(native_sr)


def _decode(source, name: str) -> tuple[np.ndarray, int]:
  try:
    return _decode_soundfile(source)
  except (soundfile.LibsndfileError, RuntimeError, TypeError) as sf_error:
    cause = f"cannot decode audio ({getattr(sf_error, 'error_string', sf_error)})"
    if not isinstance(source, (str, os.PathLike)):
      raise AudioError(f"{name}: {cause}") from sf_error
  try:
    return _decode_audioread(os.fspath(source))
  except Exception as fallback_error:  # audioread raises many unrelated types
    raise AudioError(f"{name}: {cause}; audioread fallback failed too "
                     f"({type(fallback_error).__name__})") from fallback_error


def load_audio(source: AudioSource, sr: int = SAMPLE_RATE) -> np.ndarray:
  """Decodes a path, bytes or binary file object to float32 mono at `sr` Hz, shape [samples]."""
  name = source_name(source)
  if not isinstance(sr, (int, np.integer)) or sr <= 0:
    raise AudioError(f"{name}: target sample rate must be a positive int, got {sr!r}")
  if isinstance(source, (str, os.PathLike)):
    path = pathlib.Path(source)
    if not path.is_file():
      raise AudioError(f"{name}: no such file" if not path.exists() else f"{name}: not a file")
    if not os.access(path, os.R_OK):
      raise AudioError(f"{name}: permission denied (the file is not readable by this user)")
    if path.stat().st_size == 0:
      raise AudioError(f"{name}: empty file (0 bytes)")
  elif not isinstance(source, (bytes, bytearray, memoryview)) and not hasattr(source, "read"):
    raise AudioError(f"{name}: expected a path, bytes or a binary file object, "
                     f"got {type(source).__name__}")
  data, native_sr = _decode(source, name)
  if data.shape[0] == 0:
    raise AudioError(f"{name}: audio has zero samples")
  mono = check_waveform(data.mean(axis=1, dtype=np.float32), name)
  return check_waveform(resample(mono, native_sr, int(sr)), name)
