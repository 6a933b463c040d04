"""Whisper / Qwen-Audio log-mel front end (spec §1.3) in jax.numpy: jit-able, batched, per-example max.

Input contract of `log_mel_spectrogram`: float audio at 16 kHz, shape [N] or [B, N] with N <= 480 000.
Shorter inputs are zero-padded to 30 s (the *audio* is padded, never the mel). Longer inputs raise:
trimming is a policy decision (`long_audio.prepare_clip` or an explicit `pad_or_trim`), never silent.

The STFT is framing (a gather) + `jnp.fft.rfft`. A matmul with a windowed DFT basis was measured as
well (CPU, fp32): same speed and the same max |Δ| (~1.6e-5) against a float64 reference, so the
simpler FFT is used.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import librosa
import numpy as np

from qwen_audio_jax.audio.lengths import HOP_LENGTH, N_FFT, N_FRAMES, N_SAMPLES, SAMPLE_RATE

SUPPORTED_N_MELS = (80, 128)  # Qwen-Audio / Whisper-large-v2, Qwen2-Audio / Whisper-large-v3
LOG_FLOOR = 1e-10
DYNAMIC_RANGE = 8.0  # log10 units kept below each example's max


def pad_or_trim(audio, length: int = N_SAMPLES, axis: int = -1):
  """Zero-pad (right) or trim `audio` to exactly `length` samples along `axis` (numpy or jax)."""
  xp = jnp if isinstance(audio, jax.Array) else np
  axis = axis % audio.ndim
  size = audio.shape[axis]
  if size > length:
    return audio[(slice(None),) * axis + (slice(0, length),)]
  if size < length:
    widths = [(0, 0)] * audio.ndim
    widths[axis] = (0, length - size)
    return xp.pad(audio, widths)
  return audio


@functools.lru_cache(maxsize=None)
def mel_filters(n_mels: int) -> np.ndarray:
  """Slaney mel filterbank [n_mels, 201] (librosa, sr 16 kHz, n_fft 400), float32, read-only."""
  if n_mels not in SUPPORTED_N_MELS:
    raise ValueError(f"n_mels={n_mels} is not supported; use one of {SUPPORTED_N_MELS}")
  filters = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels).astype(np.float32)
  filters.setflags(write=False)
  return filters


@functools.lru_cache(maxsize=None)
def _hann_window() -> np.ndarray:
  """Periodic Hann window of N_FFT samples (torch.hann_window default)."""
  n = np.arange(N_FFT, dtype=np.float64)
  return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _frame_indices(n_frames: int = N_FRAMES) -> np.ndarray:
  """Sample indices [n_frames, N_FFT] of each frame in the reflect-padded signal (last frame dropped)."""
  starts = np.arange(n_frames, dtype=np.int32)[:, None] * HOP_LENGTH
  return starts + np.arange(N_FFT, dtype=np.int32)[None, :]


def _power_spectrogram(audio: jax.Array) -> jax.Array:
  """|STFT|^2 with center=True reflect padding: [..., N] -> [..., N // HOP_LENGTH, 201]."""
  half = N_FFT // 2
  widths = [(0, 0)] * (audio.ndim - 1) + [(half, half)]
  padded = jnp.pad(audio, widths, mode="reflect")
  frames = padded[..., _frame_indices(audio.shape[-1] // HOP_LENGTH)] * _hann_window()
  spectrum = jnp.fft.rfft(frames, axis=-1)
  return jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2


@functools.partial(jax.jit, static_argnames=("n_mels", "n_frames"))
def log_mel_spectrogram(audio, n_mels: int = 80, n_frames: int = N_FRAMES) -> jax.Array:
  """Log-mel features of spec §1.3: [N] -> [n_mels, 3000], [B, N] -> [B, n_mels, 3000], float32.

  `N` must be <= 480 000 (16 kHz); shorter audio is zero-padded to 30 s first. The max(L) - 8 floor is
  taken per example, so a clip's features never depend on the rest of its batch. Jitted (one compile
  per input shape and n_mels); also usable inside a caller's jit.
  `n_frames` < 3000: only the first n_frames frames of that 30 s result, computed from n_frames + 2
  hops of audio (samples past them are not read); exactly the 30 s result's frames when the audio is
  silent (zero) after n_frames hops, e.g. a clip that fits a training run's mel crop.
  """
  audio = jnp.asarray(audio, dtype=jnp.float32)
  if audio.ndim not in (1, 2):
    raise ValueError(f"log_mel_spectrogram expects audio [N] or [B, N], got shape {audio.shape}")
  if audio.shape[-1] > N_SAMPLES:
    raise ValueError(
        f"log_mel_spectrogram got {audio.shape[-1]} samples (> {N_SAMPLES} = 30 s at 16 kHz); "
        "choose a long-audio policy with prepare_clip() or trim explicitly with pad_or_trim()")
  if not 0 < n_frames <= N_FRAMES:
    raise ValueError(f"log_mel_spectrogram: n_frames={n_frames} is not in 1..{N_FRAMES}")
  filters = jnp.asarray(mel_filters(n_mels))
  # Frames n_frames and n_frames + 1 still see the last samples before the crop: they count for the max.
  power = _power_spectrogram(pad_or_trim(audio, min(N_SAMPLES, (n_frames + 2) * HOP_LENGTH)))
  mel = jnp.einsum("mf,...tf->...mt", filters, power, precision=jax.lax.Precision.HIGHEST)
  log_mel = jnp.log10(jnp.maximum(mel, LOG_FLOOR))
  per_example_max = jnp.max(log_mel, axis=(-2, -1), keepdims=True)
  log_mel = jnp.maximum(log_mel[..., :n_frames], per_example_max - DYNAMIC_RANGE)
  return (log_mel + 4.0) / 4.0
