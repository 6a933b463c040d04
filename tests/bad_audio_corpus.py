"""The bad-input corpus of tests/test_bad_inputs.py: one file (or non-file) per case, built on the fly.

`build(folder)` -> {case: path}. Sample rates, channels, encodings and lengths that real datasets contain,
plus files that are broken in every way we know of. The expected handling of each case is `EXPECTED`.
"""

from __future__ import annotations

import os

import numpy as np
import soundfile

SR = 16000


def _tone(seconds: float, sr: int = SR, channels: int = 1, amp: float = 0.3) -> np.ndarray:
  t = np.arange(int(round(seconds * sr))) / sr
  wave = amp * np.sin(2 * np.pi * 220 * t)
  return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def build(folder: str) -> dict[str, str]:
  os.makedirs(folder, exist_ok=True)
  p = lambda name: os.path.join(folder, name)  # noqa: E731
  out = {}

  def write(case, name, data, sr=SR, **kw):
    soundfile.write(p(name), data, sr, **kw)
    out[case] = p(name)

  open(p("empty.wav"), "wb").close()
  out["empty file"] = p("empty.wav")
  write("zero-sample wav", "zero.wav", np.zeros((0,), np.float32), subtype="FLOAT")
  write("ok 16 kHz wav", "ok.wav", _tone(1.0), subtype="PCM_16")
  with open(p("ok.wav"), "rb") as f:
    head = f.read(30)
  with open(p("truncated_header.wav"), "wb") as f:
    f.write(head)
  out["truncated wav header"] = p("truncated_header.wav")
  with open(p("random.wav"), "wb") as f:
    f.write(np.random.default_rng(0).bytes(4000))
  out["random bytes .wav"] = p("random.wav")
  with open(p("text.flac"), "w") as f:
    f.write("this is not audio\n" * 50)
  out["text file .flac"] = p("text.flac")
  write("mp3", "tone.mp3", _tone(1.0), format="MP3")
  write("ogg vorbis", "tone.ogg", _tone(1.0), format="OGG", subtype="VORBIS")
  write("flac", "tone.flac", _tone(1.0), format="FLAC")
  write("8 kHz", "8k.wav", _tone(1.0, sr=8000), sr=8000)
  write("48 kHz stereo", "48k_stereo.wav", _tone(1.0, sr=48000, channels=2), sr=48000)
  write("6 channels", "6ch.wav", _tone(1.0, channels=6), subtype="PCM_16")
  write("int16 PCM", "int16.wav", _tone(1.0), subtype="PCM_16")
  write("int32 PCM", "int32.wav", _tone(1.0), subtype="PCM_32")
  write("float64 PCM", "float64.wav", _tone(1.0), subtype="DOUBLE")
  nan = _tone(1.0).astype(np.float32)
  nan[100] = np.nan
  write("NaN samples", "nan.wav", nan, subtype="FLOAT")
  inf = _tone(1.0).astype(np.float32)
  inf[5] = np.inf
  write("Inf samples", "inf.wav", inf, subtype="FLOAT")
  write("full-scale clipping", "clipped.wav", np.clip(_tone(1.0, amp=4.0), -1.0, 1.0), subtype="PCM_16")
  write("silence", "silence.wav", np.zeros(SR), subtype="PCM_16")
  write("0.1 s", "short.wav", _tone(0.1), subtype="PCM_16")
  write("31 s", "31s.wav", _tone(31.0), subtype="PCM_16")
  write("10 min", "10min.wav", _tone(600.0), subtype="PCM_16")
  os.makedirs(p("a_directory.wav"), exist_ok=True)
  out["a directory"] = p("a_directory.wav")
  out["missing file"] = p("missing.wav")
  soundfile.write(p("unreadable.wav"), _tone(1.0), SR)
  os.chmod(p("unreadable.wav"), 0)
  out["unreadable file"] = p("unreadable.wav")
  os.makedirs(p("dir with spaces"), exist_ok=True)
  write("spaces + non-ASCII path", os.path.join("dir with spaces", "ünïcödé 音频 clip.wav"), _tone(1.0))
  return out


def unreadable_is_readable(path: str) -> bool:
  """True when permissions do not deny reads here (root, CAP_DAC_OVERRIDE): that case cannot be tested."""
  return os.access(path, os.R_OK)
