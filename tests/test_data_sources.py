"""Data sources: synthetic set, manual-dir corpora on fixture trees, TFDS builders, jsonl manifests."""

import io
import json
import pathlib

import numpy as np
import pytest
import soundfile

from qwen_audio_jax.data import manifests, synthetic
from qwen_audio_jax.data.corpora import CORPORA
from qwen_audio_jax.data.records import ManualDirError
from qwen_audio_jax.data.sources import records_of
from qwen_audio_jax.prompts import parse_note_analysis


def write_audio(path: pathlib.Path, seconds: float = 0.3, sr: int = 16000, freq: float = 440.0) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  t = np.arange(int(seconds * sr)) / sr
  soundfile.write(path, 0.3 * np.sin(2 * np.pi * freq * t), sr)


def decode(record) -> np.ndarray:
  audio, sr = soundfile.read(io.BytesIO(record["audio"]))
  assert sr == 16000
  return audio


# --- synthetic ---------------------------------------------------------------------------------

def test_synthetic_same_seed_identical_bytes_other_seed_differs():
  for task in synthetic.TASKS:
    a = synthetic.generate(task, 7, seed=3)
    b = synthetic.generate(task, 7, seed=3)
    assert a == b  # every field, audio bytes included
    assert synthetic.generate(task, 7, seed=4)["audio"] != a["audio"]
    assert synthetic.generate(task, 8, seed=3)["audio"] != a["audio"]
    assert synthetic.generate(task, 7, split="test", seed=3)["audio"] != a["audio"]


def test_synthetic_lengths_and_labels_follow_the_audio():
  durations = []
  for index in range(40):
    asr = synthetic.generate("asr", index)
    words = asr["text"].split()
    assert 1 <= len(words) <= 4 and set(words) <= set(synthetic.DIGIT_WORDS)
    mna = parse_note_analysis(synthetic.generate("mna", index)["text"])
    audio = decode(synthetic.generate("mna", index))
    spectrum = np.abs(np.fft.rfft(audio))
    peak_hz = np.argmax(spectrum) * 16000 / len(audio)  # fundamental is the strongest partial
    assert abs(12 * np.log2(peak_hz / 440.0) + 69 - mna["pitch"]) < 0.6
    aqa = synthetic.generate("aqa", index)
    assert aqa["question"] in (synthetic.AQA_COUNT_QUESTION, synthetic.AQA_PITCH_QUESTION)
    for task in synthetic.TASKS:
      durations.append(len(decode(synthetic.generate(task, index))) / 16000)
  assert min(durations) >= synthetic.MIN_SECONDS and max(durations) <= synthetic.MAX_SECONDS
  assert max(durations) - min(durations) > 1.0  # lengths really vary


def test_synthetic_noise_colour_has_the_right_spectral_slope():
  for index in range(12):
    record = synthetic.generate("asc", index)
    audio = decode(record)
    power = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / 16000)
    band = (freqs > 100) & (freqs < 4000)
    slope = np.polyfit(np.log10(freqs[band]), np.log10(power[band] + 1e-20), 1)[0]
    expected = -synthetic.NOISE_COLOURS[record["text"]]
    assert abs(slope - expected) < 0.5, (record["text"], slope)


def test_synthetic_source_random_access_and_errors():
  source = synthetic.SyntheticSource("aac", 5, seed=1)
  assert len(source) == 5 and source[4] == synthetic.generate("aac", 4, seed=1)
  with pytest.raises(IndexError):
    source[5]
  with pytest.raises(KeyError, match="unknown task"):
    synthetic.SyntheticSource("nope", 3)


# --- manual-dir corpora ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpora_root(tmp_path_factory) -> pathlib.Path:
  root = tmp_path_factory.mktemp("corpora")
  ls = root / "librispeech" / "LibriSpeech" / "dev-clean"
  for chapter, utts in (("19/198", 2), ("26/495", 1)):
    spk, ch = chapter.split("/")
    lines = []
    for u in range(utts):
      utt = f"{spk}-{ch}-{u:04d}"
      write_audio(ls / chapter / f"{utt}.flac")
      lines.append(f"{utt} HELLO WORLD {u}")
    (ls / chapter / f"{spk}-{ch}.trans.txt").write_text("\n".join(lines) + "\n")
  ai = root / "aishell" / "data_aishell"
  for split, utt in (("train", "BAC009S0002W0122"), ("test", "BAC009S0764W0121"), ("test", "BAC009S0764W0999")):
    write_audio(ai / "wav" / split / utt[6:11] / f"{utt}.wav")
  (ai / "transcript").mkdir(parents=True)
  (ai / "transcript" / "aishell_transcript_v0.8.txt").write_text(
      "BAC009S0002W0122 而 对 楼市 成交\nBAC009S0764W0121 甚至 出现 交易\n", encoding="utf-8")
  cl = root / "clotho"
  for name in ("a.wav", "b.wav"):
    write_audio(cl / "clotho_audio_evaluation" / name)
  (cl / "clotho_captions_evaluation.csv").write_text(
      "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
      "a.wav,a dog barks,dog barking,a dog,barks,woof\nb.wav,rain falls,rain,heavy rain,drops,water\n")
  for split, label in (("Train", "Bus"), ("Train", "Cafe"), ("Test", "Park")):
    write_audio(root / "cochl" / split / label / f"{label}_0001.wav")
  vs = root / "vocalsound"
  for name in ("f0003_0_cough.wav", "f0003_1_laughter.wav", "m0100_0_sniff.wav"):
    write_audio(vs / "audio_16k" / name)
  (vs / "datasplit").mkdir()
  (vs / "datasplit" / "te_meta.csv").write_text("speaker\nm0100\n")
  (vs / "datasplit" / "tr_meta.csv").write_text("f0003\n")
  meld = root / "meld"
  (meld).mkdir()
  (meld / "test_sent_emo.csv").write_text(
      "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode\n"
      "1,Hi there,Joey,Joy,positive,0,0,1,1\n2,\"Oh, no\",Ross,Sadness,negative,0,1,1,1\n"
      "3,Missing clip,Ross,Anger,negative,0,2,1,1\n")
  write_audio(meld / "audio" / "test" / "dia0_utt0.wav")
  write_audio(meld / "audio" / "test" / "dia0_utt1.flac")
  return root


def test_librispeech_fixture(corpora_root):
  records = CORPORA["librispeech"].scan(corpora_root / "librispeech", "dev-clean")
  assert [r["id"] for r in records] == ["19-198-0000", "19-198-0001", "26-495-0000"]
  assert records[1]["text"] == "hello world 1" and records[1]["task"] == "asr"
  assert records[0]["source"] == "librispeech/dev-clean" and records[0]["audio"].endswith(".flac")


def test_aishell_fixture_skips_wavs_without_transcript(corpora_root):
  test = CORPORA["aishell1"].scan(corpora_root / "aishell", "test")
  assert [(r["id"], r["text"], r["lang"]) for r in test] == [("BAC009S0764W0121", "甚至出现交易", "zh")]
  assert CORPORA["aishell1"].scan(corpora_root / "aishell" / "data_aishell", "train")[0]["text"] == "而对楼市成交"


def test_clotho_fixture_one_record_per_caption(corpora_root):
  records = CORPORA["clotho"].scan(corpora_root / "clotho", "evaluation")
  assert len(records) == 10 and records[0]["text"] == "a dog barks" and records[0]["task"] == "aac"
  assert records[6]["references"].split("\n") == ["rain falls", "rain", "heavy rain", "drops", "water"]


def test_cochlscene_vocalsound_meld_fixtures(corpora_root):
  cochl = CORPORA["cochlscene"].scan(corpora_root / "cochl", "train")
  assert [(r["text"], r["task"]) for r in cochl] == [("Bus", "asc"), ("Cafe", "asc")]
  vs_test = CORPORA["vocalsound"].scan(corpora_root / "vocalsound", "test")
  assert [(r["id"], r["text"]) for r in vs_test] == [("m0100_0_sniff", "sniff")]
  assert [r["text"] for r in CORPORA["vocalsound"].scan(corpora_root / "vocalsound", "train")] == [
      "cough", "laughter"]
  with pytest.warns(UserWarning, match="1 csv rows have no audio"):
    meld = CORPORA["meld"].scan(corpora_root / "meld", "test")
  assert [(r["id"], r["text"], r["task"]) for r in meld] == [("dia0_utt0", "joy", "ser"),
                                                            ("dia0_utt1", "sadness", "ser")]


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_missing_manual_dir_is_one_clear_line(name, tmp_path):
  with pytest.raises(ManualDirError) as info:
    CORPORA[name].scan(tmp_path / "nowhere", CORPORA[name].SPLITS[-1])
  message = str(info.value)
  assert name in message and "nowhere" in message and "expected layout" in message
  assert "\n" not in message


def test_source_entry_without_manual_dir_names_the_layout():
  with pytest.raises(ValueError, match="needs 'manual_dir'.*LibriSpeech"):
    records_of({"name": "librispeech", "split": "dev-clean"})


# --- TFDS (array_record, no tensorflow) --------------------------------------------------------

def test_tfds_builders_prepare_and_read_without_tensorflow(corpora_root, tmp_path, monkeypatch):
  import sys

  from qwen_audio_jax.data import tfds_builders

  data_dir = tmp_path / "tfds"
  tfds_builders.prepare("librispeech", data_dir, corpora_root / "librispeech")
  direct = CORPORA["librispeech"].scan(corpora_root / "librispeech", "dev-clean")
  stored = records_of({"name": "librispeech", "split": "dev-clean", "data_dir": str(data_dir)})
  assert sorted(r["id"] for r in stored) == [r["id"] for r in direct]
  by_id = {r["id"]: r for r in stored}
  for record in direct:
    assert by_id[record["id"]]["text"] == record["text"]
    assert by_id[record["id"]]["audio"] == pathlib.Path(record["audio"]).read_bytes()
  assert "tensorflow" not in sys.modules
  with pytest.raises(KeyError, match="was not prepared"):
    tfds_builders.TfdsRecords("librispeech", "test-other", data_dir)
  with pytest.raises(ManualDirError, match="no prepared TFDS data"):
    tfds_builders.TfdsRecords("clotho", "evaluation", data_dir)

  monkeypatch.setattr(tfds_builders.QajSynthetic, "SIZES", {"train": 3, "validation": 1, "test": 1})
  tfds_builders.prepare("synthetic", data_dir)
  synth = tfds_builders.TfdsRecords("synthetic", "train", data_dir)
  assert len(synth) == 3 * len(synthetic.TASKS)
  first = synth[0]
  task, _, index = first["id"].split("-")
  assert first == synthetic.generate(task, int(index), split="train")


# --- jsonl manifests ---------------------------------------------------------------------------

def test_eval_jsonl_in_qwen_audio_format(tmp_path):
  rows = [
      {"audio": "a.flac", "prompt": "<|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>",
       "gt": "hello", "source": "librispeech_test_clean"},
      {"audio": "/abs/b.wav", "prompt": "<|startofanalysis|><|en|><|question|>is it loud?<|answer|>",
       "gt": "yes", "source": "clothoaqa_eval"},
      {"audio": "c.wav", "prompt": "<|startofanalysis|><|unknown|><|keyword|><|en|><|notimestamps|><|scene|>",
       "gt": "Bus", "source": "cochlscene_test"},
  ]
  path = tmp_path / "eval.jsonl"
  manifests.write_eval_jsonl(path, rows)
  records = manifests.read_eval_jsonl(path)
  assert [r["task"] for r in records] == ["asr", "aqa", "asc"]
  assert [r["lang"] for r in records] == ["en", "en", "unknown"]
  assert records[0]["audio"] == str(tmp_path / "a.flac") and records[1]["audio"] == "/abs/b.wav"
  assert records[0]["prompt"] == rows[0]["prompt"] and records[0]["text"] == "hello"
  assert records[0]["source"] == "librispeech_test_clean"


def test_task_jsonl_and_its_errors(tmp_path):
  path = tmp_path / "train.jsonl"
  path.write_text(json.dumps({"audio": "x.wav", "task": "AQA", "lang": "en", "question": "how many?",
                              "answer": "two"}) + "\n\n" +
                  json.dumps({"audio": "y.wav", "task": "asr", "lang": "zh", "text": "你好"}) + "\n",
                  encoding="utf-8")
  records = manifests.read_task_jsonl(path)
  assert [(r["task"], r["text"], r["question"], r["id"]) for r in records] == [
      ("aqa", "two", "how many?", "1"), ("asr", "你好", "", "3")]
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"audio": "x.wav", "task": "asr"}\n')
  with pytest.raises(manifests.ManifestError, match=r"bad.jsonl:1: missing field\(s\) \['lang'\]"):
    manifests.read_task_jsonl(bad)
  bad.write_text('{"audio": "x.wav", "task": "dance", "lang": "en", "text": "t"}\n')
  with pytest.raises(manifests.ManifestError, match="bad.jsonl:1: .*unknown task 'dance'"):
    manifests.read_task_jsonl(bad)
  bad.write_text('{"audio": "x.wav", \n')
  with pytest.raises(manifests.ManifestError, match="bad.jsonl:1: invalid JSON"):
    manifests.read_task_jsonl(bad)
