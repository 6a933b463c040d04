"""Log-mel parity (spec §1.3): jax vs a float64 numpy reference and vs transformers' WhisperFeatureExtractor.

Tolerance: max |Δ| <= 1e-4 on the normalised features. One jit compile per (shape, n_mels).
"""

import contextlib

import librosa
import numpy as np
import pytest
from transformers import WhisperFeatureExtractor

from qwen_audio_jax.audio import (N_FRAMES, N_SAMPLES, SAMPLE_RATE, load_audio, log_mel_spectrogram,
                                  mel_filters, pad_or_trim, prepare_clip)

TOL = 1e-4
N_MELS = (80, 128)


def reference_log_mel(audio: np.ndarray, n_mels: int) -> np.ndarray:
  """Spec §1.3 in float64 numpy: pad/trim, reflect-centred STFT, drop last frame, mel, log, clamp."""
  audio = np.asarray(audio, np.float64)[:N_SAMPLES]
  audio = np.pad(audio, (0, N_SAMPLES - audio.shape[0]))
  padded = np.pad(audio, (200, 200), mode="reflect")
  window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)  # periodic Hann
  starts = np.arange(N_FRAMES + 1) * 160
  frames = padded[starts[:, None] + np.arange(400)] * window
  power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2  # [3001, 201]
  power = power[:-1]
  filters = librosa.filters.mel(sr=16000, n_fft=400, n_mels=n_mels, dtype=np.float64)
  log_mel = np.log10(np.maximum(filters @ power.T, 1e-10))
  log_mel = np.maximum(log_mel, log_mel.max() - 8.0)
  return (log_mel + 4.0) / 4.0


def _synthetic(seconds: float, seed: int) -> np.ndarray:
  """Chirp + noise with a near-silent stretch, so the max-8 floor and dynamic range are exercised."""
  rng = np.random.default_rng(seed)
  n = int(round(seconds * SAMPLE_RATE))
  t = np.arange(n) / SAMPLE_RATE
  x = 0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.02 * rng.standard_normal(n)
  x[n // 3: n // 2] *= 1e-4
  return x.astype(np.float32)


@pytest.fixture(scope="module")
def clips(jfk_path):
  """name -> raw 16 kHz float32 audio (any length)."""
  rng = np.random.default_rng(0)
  return {
      "jfk": load_audio(jfk_path),  # 44.1 kHz stereo -> 16 kHz mono
      "white_noise": (0.1 * rng.standard_normal(N_SAMPLES)).astype(np.float32),
      "silence": np.zeros(5 * SAMPLE_RATE, np.float32),
      "0.5s": _synthetic(0.5, 1),
      "29.99s": _synthetic(29.99, 2),
      "30s": _synthetic(30.0, 3),
      "31s": _synthetic(31.0, 4),
  }


def _model_input(audio: np.ndarray) -> np.ndarray:
  """The 30 s window our pipeline feeds the mel: >30 s goes through the explicit truncate policy."""
  too_long = audio.shape[0] > N_SAMPLES
  with pytest.warns(UserWarning, match="truncated") if too_long else contextlib.nullcontext():
    segments, info = prepare_clip(audio, policy="truncate")
  assert info.n_chunks == 1
  return pad_or_trim(segments[0], N_SAMPLES)


@pytest.fixture(scope="module")
def batch(clips):
  names = list(clips)
  return names, np.stack([_model_input(clips[k]) for k in names])


@pytest.fixture(scope="module", params=N_MELS)
def ours(request, batch):
  """n_mels -> (names, batched jax features as numpy [B, n_mels, 3000])."""
  names, audio = batch
  return request.param, names, np.asarray(log_mel_spectrogram(audio, n_mels=request.param))


def test_shapes_and_dtype(ours, batch):
  n_mels, names, feats = ours
  assert feats.shape == (len(names), n_mels, N_FRAMES)
  assert feats.dtype == np.float32
  assert np.isfinite(feats).all()


def test_matches_float64_reference(ours, clips):
  n_mels, names, feats = ours
  worst = {k: float(np.abs(feats[i] - reference_log_mel(clips[k], n_mels)).max()) for i, k in enumerate(names)}
  print(f"\nn_mels={n_mels} max|Δ| vs float64 numpy: {worst}")
  assert max(worst.values()) <= TOL, worst


def test_matches_whisper_feature_extractor(ours, clips):
  """HF's public call (torch STFT path when torch is installed) and its numpy path, raw audio in."""
  n_mels, names, feats = ours
  extractor = WhisperFeatureExtractor(feature_size=n_mels)
  worst_call, worst_np = {}, {}
  for i, name in enumerate(names):
    raw = clips[name]
    hf = extractor(raw, sampling_rate=SAMPLE_RATE, padding="max_length", truncation=True,
                   return_tensors="np")["input_features"][0]
    assert hf.shape == (n_mels, N_FRAMES)
    worst_call[name] = float(np.abs(feats[i] - hf).max())
    hf_np = extractor._np_extract_fbank_features(pad_or_trim(raw, N_SAMPLES)[None], "cpu")[0]
    worst_np[name] = float(np.abs(feats[i] - hf_np).max())
  print(f"\nn_mels={n_mels} max|Δ| vs HF __call__: {worst_call}\n  vs HF numpy path: {worst_np}")
  assert max(worst_call.values()) <= TOL, worst_call
  assert max(worst_np.values()) <= TOL, worst_np


def test_silence_is_constant_floor(ours):
  n_mels, names, feats = ours
  silence = feats[names.index("silence")]
  np.testing.assert_array_equal(silence, np.full_like(silence, (-10.0 + 4.0) / 4.0))


def test_batched_equals_single(batch):
  """Each example of the batch equals the same clip run alone ([N] input, no batch axis)."""
  names, audio = batch
  feats = np.asarray(log_mel_spectrogram(audio, n_mels=80))  # cached compile from `ours`
  for i, name in enumerate(names):
    alone = np.asarray(log_mel_spectrogram(audio[i], n_mels=80))
    assert alone.shape == (80, N_FRAMES)
    assert np.abs(alone - feats[i]).max() <= 1e-6, name


def test_loud_and_quiet_clip_normalised_per_example(clips):
  loud = pad_or_trim(clips["white_noise"] * 5.0, N_SAMPLES)
  quiet = pad_or_trim(clips["0.5s"] * 1e-3, N_SAMPLES)  # 0.5 s, then zeros
  together = np.asarray(log_mel_spectrogram(np.stack([loud, quiet])))
  alone = [np.asarray(log_mel_spectrogram(np.stack([x, x]))[0]) for x in (loud, quiet)]
  # A batch-global floor (loud max - 8) would lift the quiet clip's lowest values: the test can fail.
  assert together[0].max() - 2.0 > together[1].min() + 0.5
  np.testing.assert_allclose(together[0], alone[0], atol=1e-6, rtol=0)
  np.testing.assert_allclose(together[1], alone[1], atol=1e-6, rtol=0)
  own_floor = max(together[1].max() - 2.0, (-10.0 + 4.0) / 4.0)  # (max(L) - 8 + 4) / 4, or the 1e-10 clamp
  assert together[1].min() == pytest.approx(own_floor, abs=1e-6)


def test_short_input_is_zero_padded_audio(clips):
  """[N < 480000] input == explicitly padded input (padding the audio, not the mel)."""
  short = clips["0.5s"]
  padded = pad_or_trim(short, N_SAMPLES)
  two = np.stack([short, short])
  np.testing.assert_allclose(np.asarray(log_mel_spectrogram(two)),
                             np.asarray(log_mel_spectrogram(np.stack([padded, padded]))), atol=1e-6, rtol=0)


def test_over_30s_is_rejected_not_trimmed(clips):
  with pytest.raises(ValueError, match="480000.*prepare_clip"):
    log_mel_spectrogram(clips["31s"])


def test_unsupported_n_mels():
  with pytest.raises(ValueError, match="n_mels=64"):
    mel_filters(64)


def test_mel_filters_are_librosa_slaney():
  for n_mels in N_MELS:
    filters = mel_filters(n_mels)
    assert filters.shape == (n_mels, 201) and filters.dtype == np.float32
    np.testing.assert_array_equal(filters, librosa.filters.mel(sr=16000, n_fft=400, n_mels=n_mels))
    assert not filters.flags.writeable


@pytest.mark.parametrize("length", [10, 480000, 500000])
def test_pad_or_trim_numpy_and_jax(length):
  import jax.numpy as jnp
  x = np.arange(1, 1921, dtype=np.float32).reshape(2, 960)
  for xp_in in (x, jnp.asarray(x)):
    out = pad_or_trim(xp_in, length, axis=-1)
    assert out.shape == (2, length) and type(out) is type(xp_in)
    keep = min(length, x.shape[1])
    np.testing.assert_array_equal(np.asarray(out)[:, :keep], x[:, :keep])
    assert not np.asarray(out)[:, keep:].any()
  np.testing.assert_array_equal(pad_or_trim(x, 1, axis=0), x[:1])


def test_first_frames_only_equal_the_30s_window_when_the_audio_fits(clips):
  """n_frames=k (the training loop's mel crop) reads k + 2 hops: the first k frames of the 30 s features
  (to 1 ulp: the FFT and mel matmul round differently per shape) when the audio after k hops is silent,
  also with the loudest samples at the very edge (they count for the max through frames k and k + 1)."""
  k = 200
  fits = np.zeros(k * 160, np.float32)
  fits[:8000] = clips["0.5s"]
  edge = (1e-3 * np.random.default_rng(5).standard_normal(k * 160)).astype(np.float32)
  edge[-120:] = 0.9  # louder than anything before, in the last 120 samples of the crop
  for audio in (fits, edge, clips["0.5s"]):
    full = np.asarray(log_mel_spectrogram(audio))
    np.testing.assert_allclose(np.asarray(log_mel_spectrogram(audio, n_frames=k)), full[:, :k], rtol=0, atol=2.4e-7)
  batch = np.stack([fits, edge])
  np.testing.assert_allclose(np.asarray(log_mel_spectrogram(batch, n_frames=k)),
                             np.asarray(log_mel_spectrogram(batch))[..., :k], rtol=0, atol=2.4e-7)
  with pytest.raises(ValueError, match="n_frames=0 is not in 1..3000"):
    log_mel_spectrogram(fits, n_frames=0)
