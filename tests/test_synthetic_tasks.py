"""The built-in synthetic set as a product: SRWT references follow the audio to the 10 ms, every task
uses its real prompt and fits the tiny config, the shipped vocabulary is the corpus', chance levels."""

import io
import runpy
import shutil

import numpy as np
import pytest
import sentencepiece as spm
import soundfile

from qwen_audio_jax.assets import SYNTHETIC_VOCAB
from qwen_audio_jax.data import synthetic
from qwen_audio_jax.data.examples import ExampleEncoder
from qwen_audio_jax.prompts import parse_word_timestamps, task_tags
from qwen_audio_jax.tokenizer import get_tokenizer

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
# pylint: disable=protected-access
ROWS, COLS = synthetic._DTMF_ROWS, synthetic._DTMF_COLS
DTMF = {synthetic.DIGIT_WORDS[d]: (ROWS[r], COLS[c]) for d, (r, c) in synthetic._DTMF_KEY.items()}


def _audio(record) -> np.ndarray:
  audio, sr = soundfile.read(io.BytesIO(record["audio"]))
  assert sr == 16000
  return audio


def _rms_10ms(audio: np.ndarray) -> np.ndarray:
  return np.sqrt(np.mean(audio[:len(audio) // 160 * 160].reshape(-1, 160) ** 2, axis=1))


def _power_at(segment: np.ndarray, freq: float) -> float:
  t = np.arange(len(segment)) / 16000
  return abs(np.sum(segment * np.exp(-2j * np.pi * freq * t))) ** 2


@pytest.mark.parametrize("index", range(12))
def test_srwt_times_are_the_tone_boundaries_to_the_10ms(index):
  record = synthetic.generate("srwt", index, split="test")
  audio, text = _audio(record), record["text"]
  words = parse_word_timestamps(text, keep_empty=True)
  assert text.startswith("<|0.00|><|sil|>") and words[0]["start"] == 0.0
  assert words[-1]["word"] == synthetic.SIL and words[-1]["end"] == pytest.approx(len(audio) / 16000)
  assert all(a["end"] == b["start"] for a, b in zip(words, words[1:]))  # shared boundaries, no gap
  loud = _rms_10ms(audio) > 0.05  # tones: gain >= 0.2 (rms >= 0.1); silence: the 1e-3 floor
  for w in words:
    first, last = round(w["start"] * 100), round(w["end"] * 100)
    expect_tone = w["word"] != synthetic.SIL
    assert loud[first:last].all() == expect_tone and loud[first:last].any() == expect_tone, (w, text)
    if expect_tone:  # the word is the key whose two DTMF frequencies sound in that span
      segment = audio[first * 160:last * 160]
      powers = {f: _power_at(segment, f) for f in ROWS + COLS}
      assert set(sorted(powers, key=powers.get)[-2:]) == set(DTMF[w["word"]]), w
  asr_words = [w["word"] for w in words if w["word"] != synthetic.SIL]
  assert 1 <= len(asr_words) <= 4 and set(asr_words) <= set(synthetic.DIGIT_WORDS)


def test_every_task_uses_its_tag_prompt_and_fits_the_tiny_config():
  cfg = runpy.run_path(str(ROOT / "configs" / "tiny_synthetic.py"))["get_config"]()
  enc = ExampleEncoder(vocab_path=str(SYNTHETIC_VOCAB), max_tokens=max(cfg.data.seq_buckets))
  tok = enc.tokenizer
  for task in synthetic.TASKS:
    for index in range(40):
      record = synthetic.generate(task, index)
      fields = {"lang": "en"} if task in ("asr", "srwt") else {"question": record["question"]} if task == "aqa" else {}
      assert enc.prompt_text(record) == task_tags(task, **fields)
      example = enc.encode(record)  # raises if longer than the largest bucket
      assert 2 * max(example.encoder_frames) <= cfg.train.mel_frames
      assert synthetic.MIN_SECONDS <= example.audio_seconds <= synthetic.MAX_SECONDS
      answer = example.ids[example.prompt_length:]
      assert tok.decode(list(answer[:-1])) == (record["text"][len("<|0.00|>"):] if task == "srwt" else record["text"])
      assert answer[-1] == tok.eod_id
      assert not any(tok.id_to_token(int(i)).startswith("<0x") for i in answer), (task, record["text"])


def test_shipped_vocabulary_is_what_the_corpus_builds(tmp_path):
  rebuilt = synthetic.train_vocab(str(tmp_path))
  shipped = spm.SentencePieceProcessor(model_file=str(SYNTHETIC_VOCAB))
  built = spm.SentencePieceProcessor(model_file=rebuilt.model_path)
  assert shipped.get_piece_size() == built.get_piece_size()
  assert [(shipped.id_to_piece(i), shipped.get_score(i)) for i in range(shipped.get_piece_size())] == \
         [(built.id_to_piece(i), built.get_score(i)) for i in range(built.get_piece_size())]
  cfg = runpy.run_path(str(ROOT / "configs" / "tiny_synthetic.py"))["get_config"]()
  tok = get_tokenizer("qwen-audio", cfg.data.vocab_path)
  assert cfg.model.decoder.vocab_size == tok.vocab_size and cfg.model.audio_pad_id == tok.audio_pad_id


def test_chance_levels_are_what_a_blind_listener_scores():
  from qwen_audio_jax.eval import recipes, sweep_config  # pylint: disable=import-outside-toplevel
  sweep = sweep_config.load(str(ROOT / "configs" / "eval" / "tiny_synthetic.py"))
  for d in sweep.datasets:
    if d["task"] == "aac" and shutil.which("java") is None:
      continue
    records = [synthetic.generate(d["task"], i, split="test") for i in range(d["source"]["size"])]
    recipe = recipes.get(d["recipe"])
    summary = recipe.score([r["text"] for r in records], [synthetic.blind_answer(r) for r in records],
                           **dict(d["fields"]))
    metric, value, _ = synthetic.CHANCE[d["task"]]
    assert metric == recipe.headline and summary[metric] == pytest.approx(value, abs=6e-4), d["task"]
