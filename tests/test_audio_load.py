"""load_audio: formats, mono down-mix, resampling to 16 kHz, input kinds, and one-line AudioErrors."""

import io
import pathlib

import librosa
import numpy as np
import pytest
import soundfile

from qwen_audio_jax.audio import SAMPLE_RATE, AudioError, load_audio


def _tone(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
  t = np.arange(int(round(seconds * sr))) / sr
  return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(audio: np.ndarray, sr: int = SAMPLE_RATE) -> float:
  spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.shape[0])))
  return float(np.fft.rfftfreq(audio.shape[0], 1 / sr)[np.argmax(spectrum)])


def _interior_error(got: np.ndarray, want: np.ndarray, edge: int = 400) -> float:
  """Max |Δ| away from the ends (resampler edge effects)."""
  assert got.shape == want.shape
  return float(np.abs(got[edge:-edge] - want[edge:-edge]).max())


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """name -> path of small audio files written with soundfile."""
  root = tmp_path_factory.mktemp("audio")
  out = {}

  def write(name, data, sr, **kw):
    out[name] = root / name
    soundfile.write(out[name], data, sr, **kw)

  write("mono_8k.wav", _tone(440, 1.0, 8000), 8000, subtype="FLOAT")
  stereo = np.stack([_tone(440, 1.0, 44100), _tone(1000, 1.0, 44100, amp=0.2)], axis=1)
  write("stereo_44k.wav", stereo, 44100, subtype="FLOAT")
  write("mono_16k.flac", _tone(440, 1.0, SAMPLE_RATE), SAMPLE_RATE, subtype="PCM_16")
  write("tone.ogg", _tone(440, 1.0, SAMPLE_RATE), SAMPLE_RATE, format="OGG", subtype="VORBIS")
  if "MP3" in soundfile.available_formats():
    write("tone.mp3", _tone(440, 1.0, 44100), 44100, format="MP3", subtype="MPEG_LAYER_III")
  write("empty.wav", np.zeros((0, 1), np.float32), SAMPLE_RATE, subtype="FLOAT")
  nan = _tone(440, 0.1, SAMPLE_RATE)
  nan[100] = np.nan
  write("nan.wav", nan, SAMPLE_RATE, subtype="FLOAT")
  inf = _tone(440, 0.1, 44100)
  inf[7] = np.inf
  write("inf.wav", inf, 44100, subtype="FLOAT")
  out["garbage.wav"] = root / "garbage.wav"
  out["garbage.wav"].write_bytes(b"RIFF\x00\x00not really a wave file" * 10)
  return out


def test_wav_8k_is_resampled_to_16k(files):
  audio = load_audio(files["mono_8k.wav"])
  assert audio.dtype == np.float32 and audio.ndim == 1
  assert audio.shape == (SAMPLE_RATE,)
  assert _interior_error(audio, _tone(440, 1.0, SAMPLE_RATE)) < 2e-3


def test_wav_44k_stereo_is_mixed_down_then_resampled(files):
  audio = load_audio(str(files["stereo_44k.wav"]))
  assert audio.shape == (SAMPLE_RATE,)
  want = 0.5 * (_tone(440, 1.0, SAMPLE_RATE) + _tone(1000, 1.0, SAMPLE_RATE, amp=0.2))
  assert _interior_error(audio, want) < 2e-3


def test_flac_at_16k_is_unchanged(files):
  audio = load_audio(files["mono_16k.flac"])
  np.testing.assert_allclose(audio, _tone(440, 1.0, SAMPLE_RATE), atol=1.5 / 32768, rtol=0)


def test_ogg_vorbis(files):
  audio = load_audio(files["tone.ogg"])
  assert abs(audio.shape[0] - SAMPLE_RATE) <= 0.01 * SAMPLE_RATE
  assert abs(_peak_hz(audio) - 440) < 2
  assert 0.3 < np.abs(audio).max() < 0.7


def test_mp3(files):
  if "tone.mp3" not in files:
    pytest.skip("this libsndfile build cannot write MP3 (soundfile.available_formats() has no MP3)")
  audio = load_audio(files["tone.mp3"])
  assert abs(audio.shape[0] - SAMPLE_RATE) <= 0.1 * SAMPLE_RATE  # encoder delay/padding
  assert abs(_peak_hz(audio) - 440) < 2
  assert 0.3 < np.abs(audio).max() < 0.7


def test_jfk_flac_matches_librosa(jfk_path):
  """44.1 kHz stereo speech -> 11 s mono at 16 kHz, same as librosa's own mono + soxr_hq load."""
  info = soundfile.info(jfk_path)
  assert (info.samplerate, info.channels) == (44100, 2)
  audio = load_audio(jfk_path)
  want, _ = librosa.load(jfk_path, sr=SAMPLE_RATE, mono=True, res_type="soxr_hq")
  assert audio.shape == want.shape == (11 * SAMPLE_RATE,)
  np.testing.assert_allclose(audio, want, atol=1e-6, rtol=0)


def test_input_kinds_agree(files):
  path = files["stereo_44k.wav"]
  from_path = load_audio(pathlib.Path(path))
  data = path.read_bytes()
  np.testing.assert_array_equal(load_audio(data), from_path)
  np.testing.assert_array_equal(load_audio(io.BytesIO(data)), from_path)
  with open(path, "rb") as f:
    np.testing.assert_array_equal(load_audio(f), from_path)


def test_other_target_rate(files):
  assert load_audio(files["mono_16k.flac"], sr=8000).shape == (8000,)


def _assert_one_line(err: pytest.ExceptionInfo, *parts: str):
  message = str(err.value)
  assert "\n" not in message
  for part in parts:
    assert part in message, (part, message)


def test_missing_file(tmp_path):
  path = tmp_path / "nope.wav"
  with pytest.raises(AudioError) as err:
    load_audio(path)
  _assert_one_line(err, str(path), "no such file")


def test_directory_is_not_a_file(tmp_path):
  with pytest.raises(AudioError) as err:
    load_audio(tmp_path)
  _assert_one_line(err, str(tmp_path), "not a file")


def test_garbage_file(files):
  with pytest.raises(AudioError) as err:
    load_audio(files["garbage.wav"])
  _assert_one_line(err, str(files["garbage.wav"]), "cannot decode audio")


def test_garbage_bytes():
  with pytest.raises(AudioError) as err:
    load_audio(b"\x00\x01garbage" * 100)
  _assert_one_line(err, "<bytes>", "cannot decode audio")


def test_zero_length_wav(files):
  with pytest.raises(AudioError) as err:
    load_audio(files["empty.wav"])
  _assert_one_line(err, str(files["empty.wav"]), "zero samples")


@pytest.mark.parametrize("name,first", [("nan.wav", 100), ("inf.wav", 7)])
def test_non_finite_samples(files, name, first):
  with pytest.raises(AudioError) as err:
    load_audio(files[name])
  _assert_one_line(err, str(files[name]), "NaN/Inf samples", f"first at index {first}")


def test_non_finite_bytes(files):
  with pytest.raises(AudioError) as err:
    load_audio(files["nan.wav"].read_bytes())
  _assert_one_line(err, "<bytes>", "NaN/Inf")


def test_audio_error_is_value_error():
  assert issubclass(AudioError, ValueError)
