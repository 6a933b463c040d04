"""Whisper checkpoints through the generation engine: greedy and beam-search ids of a tiny random
transformers `WhisperForConditionalGeneration` (converted) equal its `generate`; a converted openai
checkpoint with its vocabulary transcribes through the `infer` CLI; Whisper-only limits are one line."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conversion import convert, tiny_models  # noqa: E402
from qwen_audio_jax import checkpoint_io  # noqa: E402
from qwen_audio_jax.audio import lengths as L  # noqa: E402
from qwen_audio_jax.audio.mel import log_mel_spectrogram, pad_or_trim  # noqa: E402
from qwen_audio_jax.infer import DecodeSettings, Generator, Prompt  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = np.array([[3, 50, 60], [3, 51, 60], [3, 52, 61]])
SECONDS = (2.5, 9.0, 27.0)


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
  root = tmp_path_factory.mktemp("whisper")
  ref = tiny_models.hf_whisper(str(root / "hf"))
  with torch.no_grad():  # larger learned positions: greedy ids change along the sequence
    ref.model.decoder.embed_positions.weight.mul_(5.0)
  ref.save_pretrained(str(root / "hf"))
  cfg, params, _ = checkpoint_io.load_model_checkpoint(
      convert.convert("hf-whisper", str(root / "hf"), str(root / "ckpt"), log=lambda *a: None))
  rng = np.random.default_rng(0)
  waves = [(0.1 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in SECONDS]
  mel = np.stack([np.asarray(log_mel_spectrogram(pad_or_trim(w, L.N_SAMPLES), n_mels=80)) for w in waves])
  prompts = [Prompt(ids=p, waveforms=[w], encoder_frames=[1500], audio_seconds=len(w) / 16000)
             for p, w in zip(PROMPTS, waves)]
  return ref, Generator(cfg.replace(matmul_precision="highest"), params, max_batch=4), prompts, mel


@pytest.mark.parametrize("ours,theirs", [(dict(), dict()), (dict(strategy="beam", num_beams=3), dict(num_beams=3))],
                         ids=["greedy", "beam3"])
def test_whisper_ids_equal_transformers_generate(whisper, ours, theirs):
  ref, gen, prompts, mel = whisper
  out = gen.generate(prompts, DecodeSettings(max_new_tokens=20, eos_ids=(2,), **ours))
  with torch.no_grad():
    expected = ref.generate(torch.from_numpy(mel), decoder_input_ids=torch.from_numpy(PROMPTS), do_sample=False,
                            max_new_tokens=20, **theirs).numpy()
  assert [o.ids for o in out] == expected.tolist()
  assert all(len(set(o.ids)) >= 4 for o in out)  # not one repeated id


def test_whisper_begin_suppress_applies_to_the_first_token_only(whisper):
  _, gen, prompts, _ = whisper
  settings = DecodeSettings(max_new_tokens=6, eos_ids=(2,))
  free = gen.generate(prompts, settings)
  first = sorted({o.ids[0] for o in free})
  later = sorted({i for o in free for i in o.ids[1:]} - set(first))
  assert later
  out = gen.generate(prompts, settings.replace(begin_suppress_ids=first))
  assert all(o.ids[0] not in first for o in out)
  assert [o.ids for o in gen.generate(prompts, settings.replace(begin_suppress_ids=later))] == [o.ids for o in free]


@pytest.fixture(scope="module")
def whisper_with_vocab(tmp_path_factory):
  """An openai-format checkpoint whose vocabulary is a small Whisper-style BPE (converted with --tokenizer)."""
  root = tmp_path_factory.mktemp("wv")
  json_path, _, n_ranks = tiny_models.whisper_vocab(str(root / "vocab"))
  cfg = tiny_models.whisper_config()
  cfg.vocab_size = n_ranks + 2 + 99 + 6 + 1501
  model = tiny_models.randomize(transformers.WhisperForConditionalGeneration(cfg), seed=5)
  tiny_models.openai_whisper(str(root / "w.pt"), model, dtype=torch.float32)
  out = subprocess.run([sys.executable, "conversion/convert.py", "--source=openai-whisper", f"--input={root / 'w.pt'}",
                        f"--output={root / 'ckpt'}", f"--tokenizer={json_path}"], cwd=REPO, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, out.stderr
  return str(root / "ckpt")


def test_whisper_cli_transcribes_and_refuses_what_whisper_cannot_do(whisper_with_vocab, jfk_path):
  base = [sys.executable, "-m", "qwen_audio_jax.infer", f"--checkpoint={whisper_with_vocab}", f"--audio={jfk_path}"]
  out = subprocess.run(base + ["--task=asr", "--max_new_tokens=8", "--json"], cwd=REPO, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, out.stderr
  result = json.loads(out.stdout)
  assert result["ids"] and result["decode"]["eos_ids"] and result["duration_s"] == pytest.approx(11.0, abs=0.01)
  for flags, message in ((["--task=s2tt", "--target_language=de"], "English only"),
                         (["--task=aac"], "--task=asr or --task=s2tt"),
                         (["--chat"], "no chat mode")):
    bad = subprocess.run(base + flags, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and message in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
