"""Audio-length arithmetic (spec §1.4) and the explicit >30 s policy: error | truncate | chunk."""

import jax.numpy as jnp
import numpy as np
import pytest

from qwen_audio_jax.audio import (N_SAMPLES, SAMPLE_RATE, AudioError, audio_span, audio_tokens,
                                  encoder_frames, features_for_clip, load_audio, log_mel_spectrogram,
                                  mel_frames, pad_or_trim, prepare_clip)

# seconds -> (T, n, span), spec §1.4
SPEC_EXAMPLES = {
    0.5: (25, 12, 14),
    1.0: (50, 25, 27),
    2.5: (125, 62, 64),
    10.0: (500, 250, 252),
    29.99: (1500, 750, 752),
    30.0: (1500, 750, 752),
    31.0: (1500, 750, 752),
    120.0: (1500, 750, 752),
}


@pytest.mark.parametrize("seconds", sorted(SPEC_EXAMPLES))
def test_lengths_spec_examples(seconds):
  samples = int(round(seconds * SAMPLE_RATE))
  assert (encoder_frames(mel_frames(samples)), audio_tokens(samples), audio_span(samples)) == \
      SPEC_EXAMPLES[seconds]


@pytest.mark.parametrize("samples", [0, 1, 159, 160, 320, 479])
def test_lengths_under_480_samples_give_no_tokens(samples):
  assert audio_tokens(samples) == 0
  assert audio_span(samples) == 2


def test_lengths_vectorised_numpy_and_jax():
  samples = [int(round(s * SAMPLE_RATE)) for s in sorted(SPEC_EXAMPLES)] + [479]
  want = [SPEC_EXAMPLES[s][1] for s in sorted(SPEC_EXAMPLES)] + [0]
  np.testing.assert_array_equal(audio_tokens(np.array(samples)), want)
  np.testing.assert_array_equal(np.asarray(audio_tokens(jnp.array(samples))), want)


def _clip(seconds: float, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return (0.1 * rng.standard_normal(int(round(seconds * SAMPLE_RATE)))).astype(np.float32)


def test_31s_error_policy_raises_with_duration_and_limit():
  with pytest.raises(AudioError) as err:
    prepare_clip(_clip(31.0), policy="error", source="talk.wav")
  message = str(err.value)
  assert "talk.wav" in message and "31.00 s" in message and "30 s limit" in message


def test_error_is_the_default_policy():
  with pytest.raises(AudioError):
    prepare_clip(_clip(30.5))


def test_31s_truncate_reports_truncation_and_true_duration():
  audio = _clip(31.0)
  with pytest.warns(UserWarning, match=r"31\.00 s audio truncated"):
    segments, info = prepare_clip(audio, policy="truncate")
  assert info.truncated is True
  assert info.duration_s == pytest.approx(31.0) and info.n_samples == 31 * SAMPLE_RATE
  assert info.n_chunks == 1 and info.processed_duration_s == pytest.approx(30.0)
  (window,) = info.windows
  assert (window.offset_s, window.n_samples, window.mel_frames, window.encoder_frames,
          window.audio_tokens) == (0.0, N_SAMPLES, 3000, 1500, 750)
  np.testing.assert_array_equal(segments[0], audio[:N_SAMPLES])


def test_31s_chunk_gives_two_windows_with_offsets_and_tokens():
  audio = _clip(31.0)
  segments, info = prepare_clip(audio, policy="chunk")
  assert info.truncated is False and info.duration_s == pytest.approx(31.0)
  assert info.n_chunks == 2 and info.offsets_s == (0.0, 30.0)
  assert [(w.n_samples, w.mel_frames, w.encoder_frames, w.audio_tokens) for w in info.windows] == \
      [(N_SAMPLES, 3000, 1500, 750), (SAMPLE_RATE, 100, 50, 25)]
  np.testing.assert_array_equal(np.concatenate(segments), audio)
  assert info.processed_duration_s == pytest.approx(31.0)


def test_75s_chunk_offsets_and_short_last_window():
  _, info = prepare_clip(_clip(75.0), policy="chunk")
  assert info.offsets_s == (0.0, 30.0, 60.0)
  assert [w.duration_s for w in info.windows] == [30.0, 30.0, 15.0]
  assert [w.audio_tokens for w in info.windows] == [750, 750, 375]


@pytest.mark.parametrize("policy", ["error", "truncate", "chunk"])
@pytest.mark.parametrize("seconds", [10.0, 30.0])
def test_clips_up_to_30s_are_never_truncated(policy, seconds, recwarn):
  audio = _clip(seconds)
  segments, info = prepare_clip(audio, policy=policy)
  assert not info.truncated and info.n_chunks == 1 and not recwarn.list
  assert info.duration_s == pytest.approx(seconds)
  np.testing.assert_array_equal(segments[0], audio)
  assert info.windows[0].audio_tokens == audio_tokens(audio.shape[0])


def test_record_for_logs():
  _, info = prepare_clip(_clip(31.0), policy="chunk", source="a.flac")
  record = info.as_record()
  assert record["source"] == "a.flac" and record["n_chunks"] == 2 and record["truncated"] is False
  assert record["windows"][1]["offset_s"] == 30.0


def test_bad_policy_and_bad_audio():
  with pytest.raises(ValueError, match="unknown long-audio policy"):
    prepare_clip(_clip(1.0), policy="drop")
  with pytest.raises(AudioError, match="zero samples"):
    prepare_clip(np.zeros(0, np.float32), policy="chunk")
  bad = _clip(1.0)
  bad[5] = np.nan
  with pytest.raises(AudioError, match="NaN"):
    prepare_clip(bad, policy="chunk")


def test_features_for_clip_from_path(jfk_path):
  feats, info = features_for_clip(jfk_path)
  assert feats.shape == (1, 80, 3000)
  assert info.source == jfk_path and info.duration_s == pytest.approx(11.0) and not info.truncated
  assert info.windows[0].audio_tokens == 275
  want = log_mel_spectrogram(pad_or_trim(load_audio(jfk_path), N_SAMPLES)[None], n_mels=80)
  np.testing.assert_array_equal(np.asarray(feats), np.asarray(want))


def test_features_for_clip_chunks_long_array_128_mels():
  audio = _clip(31.0, seed=1)
  feats, info = features_for_clip(audio, n_mels=128, policy="chunk", sample_rate=SAMPLE_RATE)
  assert feats.shape == (2, 128, 3000) and info.n_chunks == 2
  # Each window is normalised on its own: swapping the windows swaps the features.
  swapped = np.stack([pad_or_trim(audio[N_SAMPLES:], N_SAMPLES), audio[:N_SAMPLES]])
  want = np.asarray(log_mel_spectrogram(swapped, n_mels=128))[::-1]
  np.testing.assert_allclose(np.asarray(feats), want, atol=1e-6, rtol=0)
  with pytest.raises(AudioError, match="over the 30 s limit"):
    features_for_clip(audio, n_mels=128, sample_rate=SAMPLE_RATE)


def test_features_for_clip_array_needs_its_sample_rate():
  audio_8k = _clip(31.0)[: 31 * 8000]
  with pytest.raises(AudioError, match="sample_rate"):
    features_for_clip(audio_8k, policy="chunk")
  _, info = prepare_clip(_clip(31.0)[: 31 * 8000], policy="chunk")  # what assuming 16 kHz would do
  assert info.duration_s == pytest.approx(15.5)
  with pytest.raises(AudioError, match="31.00 s"):  # the true duration once the rate is stated
    features_for_clip(audio_8k, sample_rate=8000)


@pytest.mark.parametrize("samples", [479, 480, 16000, 16001, 16159, 16321, 95_999, 479_841, 479_999, 480_000,
                                     700_000])
def test_audio_tokens_match_each_family_reference(samples):
  """Qwen-Audio floors L/160 (process_audio); Qwen2-Audio takes transformers' processor count: the
  feature extractor's attention mask sampled every 160th sample (a ceiling), then the conv/pool formula."""
  from transformers import WhisperFeatureExtractor
  fe = WhisperFeatureExtractor(feature_size=128)
  mask = fe(np.zeros(min(samples, N_SAMPLES), np.float32), sampling_rate=SAMPLE_RATE, padding="max_length",
            return_attention_mask=True, return_tensors="np")["attention_mask"]
  ref_mel = int(mask.sum())
  ref_tokens = (((ref_mel - 1) // 2 + 1) - 2) // 2 + 1  # processing_qwen2_audio.py
  assert audio_tokens(samples, "qwen2-audio") == ref_tokens
  capped = min(samples, N_SAMPLES)
  assert audio_tokens(samples) == (((capped // 160 - 1) // 2 + 1) - 2) // 2 + 1  # spec §1.4
  _, info = prepare_clip(np.zeros(capped, np.float32) + 0.01, policy="error", family="qwen2-audio")
  assert info.windows[0].audio_tokens == ref_tokens
