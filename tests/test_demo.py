"""The demo (first part of the main job) on the shipped clip: the numbers a user sees are right."""

from qwen_audio_jax import demo


def test_demo_qwen_audio_asr_on_jfk(jfk_path, capsys):
  out = demo.run(jfk_path, task="asr", family="qwen-audio", policy="error", n_mels=80)
  assert abs(out["duration_s"] - 11.0) < 1e-6 and out["mel_shape"] == (1, 80, 3000)
  assert out["audio_tokens"] == [275]  # 176 000 samples → 1100 mel → T 550 → 275
  assert out["n_ids"] == 1 + 275 + 1 + 6  # <audio> pads </audio> + six task tags
  assert "<|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>" in capsys.readouterr().out


def test_demo_qwen2_audio_chat_on_jfk(jfk_path):
  out = demo.run(jfk_path, task="asr", family="qwen2-audio", policy="error", n_mels=128)
  assert out["mel_shape"] == (1, 128, 3000) and out["audio_tokens"] == [275]
  assert out["n_ids"] > 275


def test_demo_cli_reports_bad_input_in_one_line(tmp_path, capsys):
  bad = tmp_path / "bad.wav"
  bad.write_bytes(b"not audio at all")
  assert demo.main([f"--audio={bad}"]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "bad.wav" in err
