"""Data pipeline: loss mask, buckets, bad-example handling, mixing, cross-process-count resume, eval."""

import json

import numpy as np
import pytest
import soundfile

from qwen_audio_jax.audio import lengths
from qwen_audio_jax.data import (DataQualityError, ExampleEncoder, collate_train, make_eval_batches,
                                 make_eval_examples, make_train_iterator, synthetic)

SYNTH = {"name": "synthetic", "split": "train", "size": 40}


def config(**overrides):
  base = {"sources": [SYNTH], "seq_buckets": (32, 64, 128, 256), "num_threads": 0}
  base.update(overrides)
  return base


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def real_rows(batches):
  """Per row (unpadded input_ids, loss_mask, mel, audio length), in batch/row order."""
  rows = []
  for batch in batches:
    for b in range(batch["input_ids"].shape[0]):
      n = int(batch["num_tokens"][b])
      rows.append((batch["input_ids"][b, :n], batch["loss_mask"][b, :n - 1], batch["audio_mel"][b],
                   int(batch["audio_lengths"][b])))
  return rows


def assert_same_rows(rows_a, rows_b):
  assert len(rows_a) == len(rows_b)
  for (ids_a, mask_a, mel_a, len_a), (ids_b, mask_b, mel_b, len_b) in zip(rows_a, rows_b):
    np.testing.assert_array_equal(ids_a, ids_b)
    np.testing.assert_array_equal(mask_a, mask_b)
    assert len_a == len_b
    np.testing.assert_array_equal(mel_a, mel_b)  # per-example mel: batch size never matters


# --- loss mask and batch layout ------------------------------------------------------------------

def test_loss_mask_covers_exactly_the_answer_tokens_and_final_eod():
  encoder = ExampleEncoder(max_tokens=256)
  tok = encoder.tokenizer
  records = [synthetic.generate(task, 3) for task in synthetic.TASKS]
  encoded = [encoder.encode(r) for r in records]
  batch = collate_train(encoded, buckets=(128, 256), max_audios=1, n_mels=80, pad_id=tok.pad_id)
  for b, (record, example) in enumerate(zip(records, encoded)):
    n = len(example.ids)
    text = record["text"]
    if record["task"] == "srwt":  # the SRWT prompt forces the first time token; the answer starts after it
      assert text.startswith("<|0.00|>")
      text = text[len("<|0.00|>"):]
    answer = tok.encode(text, allowed_special=encoder.text_specials) + [tok.eod_id]
    masked = batch["targets"][b][batch["loss_mask"][b] == 1]
    assert masked.tolist() == answer, record["task"]
    assert int(batch["loss_mask"][b].sum()) == len(answer)
    np.testing.assert_array_equal(batch["input_ids"][b, :n], example.ids)
    np.testing.assert_array_equal(batch["targets"][b, :n - 1], example.ids[1:])
    assert batch["attention_mask"][b].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)
    # prompt, audio placeholders and padding never carry loss
    prompt_targets = batch["targets"][b, :example.prompt_length - 1]
    assert batch["loss_mask"][b, :example.prompt_length - 1].sum() == 0
    assert tok.audio_pad_id in prompt_targets
    assert batch["loss_mask"][b, n - 1:].sum() == 0
    assert tok.decode(masked[:-1]) == text


def test_bucketed_shapes_and_audio_lengths():
  it = make_train_iterator(config(seq_buckets=(32, 64, 128), max_audios=2), global_batch_size=2,
                           process_index=0, process_count=1, seed=0)
  seen = set()
  for batch in take(it, 6):
    seq = batch["input_ids"].shape[1]
    seen.add(seq)
    longest = int(batch["num_tokens"].max())
    assert longest <= seq and (seq == 32 or longest > seq // 2)  # the smallest bucket that fits
    for key in ("attention_mask", "targets", "loss_mask"):
      assert batch[key].shape == (2, seq) and batch[key].dtype == np.int32
    assert batch["audio_mel"].shape == (4, 80, 3000) and batch["audio_mel"].dtype == np.float32
    samples = np.round(batch["audio_seconds"] * 16000).astype(int)
    expected = [lengths.encoder_frames(lengths.mel_frames(int(s))) for s in samples]
    assert batch["audio_lengths"][0::2].tolist() == expected
    assert batch["audio_lengths"][1::2].tolist() == [0, 0]  # second audio slot unused
    assert not batch["audio_mel"][1::2].any()
  assert len(seen) >= 2 and seen <= {32, 64, 128}


def test_mixture_follows_the_weights():
  sources = [dict(SYNTH, tasks=["asr"], weight=3.0), dict(SYNTH, tasks=["asc"], weight=1.0)]
  it = make_train_iterator(config(sources=sources), global_batch_size=4, process_index=0,
                           process_count=1, seed=0)
  tasks = [it.builder.mixtures[0][i]["task"] for i in range(200)]
  assert tasks.count("asr") == 150 and tasks.count("asc") == 50


# --- bad examples --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bad_manifest(tmp_path_factory):
  root = tmp_path_factory.mktemp("bad")
  t = np.arange(8000) / 16000
  soundfile.write(root / "good.wav", 0.3 * np.sin(2 * np.pi * 440 * t), 16000)
  (root / "corrupt.wav").write_bytes(b"RIFF\x00\x01garbage" * 20)
  nan = 0.1 * np.ones(8000, np.float32)
  nan[100] = np.nan
  soundfile.write(root / "nan.wav", nan, 16000, subtype="FLOAT")
  soundfile.write(root / "long.wav", np.zeros(16000 * 31, np.float32), 16000, subtype="PCM_16")
  rows = [("good.wav", "hello"), ("missing.wav", "x"), ("corrupt.wav", "x"), ("nan.wav", "x"),
          ("long.wav", "x"), ("good.wav", " ".join(["word"] * 200))]
  path = root / "train.jsonl"
  path.write_text("".join(json.dumps({"audio": a, "task": "asr", "lang": "en", "text": t}) + "\n"
                          for a, t in rows))
  return str(path)


def test_bad_examples_are_skipped_and_counted(bad_manifest):
  cfg = config(sources=[{"name": "jsonl", "path": bad_manifest}], max_retries=0,
               max_bad_fraction=1.0, seq_buckets=(64, 128))
  it = make_train_iterator(cfg, global_batch_size=6, process_index=0, process_count=1, seed=0)
  batch = next(it)  # one epoch of the 6-record manifest
  assert batch["example_mask"].sum() == 1 and batch["loss_mask"].sum() > 0
  bad_rows = batch["example_mask"] == 0
  assert not batch["loss_mask"][bad_rows].any() and not batch["attention_mask"][bad_rows].any()
  assert not batch["audio_lengths"][bad_rows].any()
  metrics = it.metrics()
  assert (metrics["tried"], metrics["bad"], metrics["empty"]) == (6, 5, 5)
  assert metrics["bad_fraction"] == pytest.approx(5 / 6)


def test_bad_fraction_threshold_raises_a_clear_error(bad_manifest):
  cfg = config(sources=[{"name": "jsonl", "path": bad_manifest}], max_retries=0,
               max_bad_fraction=0.5, min_examples_for_bad_check=6, seq_buckets=(64, 128))
  it = make_train_iterator(cfg, global_batch_size=6, process_index=0, process_count=1, seed=0)
  with pytest.raises(DataQualityError) as info:
    next(it)
  message = str(info.value)
  assert "5/6 examples (83.33%)" in message and "max_bad_fraction=50.00%" in message
  assert "last bad: train:" in message and ("Error" in message)


def test_bad_slots_are_refilled_from_independent_draws(bad_manifest):
  sources = [dict(SYNTH, weight=3.0), {"name": "jsonl", "path": bad_manifest, "weight": 1.0}]
  cfg = config(sources=sources, max_retries=3, max_bad_fraction=1.0, seq_buckets=(64, 128, 256))
  it = make_train_iterator(cfg, global_batch_size=8, process_index=0, process_count=1, seed=1)
  batches = take(it, 2)
  m = it.metrics()
  rows = 16
  assert m["bad"] > 0 and m["tried"] == m["bad"] + rows - m["empty"]
  assert sum(int(b["example_mask"].sum()) for b in batches) == rows - m["empty"]
  assert m["empty"] < m["bad"]  # most bad slots got a usable replacement


def test_long_audio_policies_truncate_and_chunk(bad_manifest, tmp_path):
  path = tmp_path / "long.jsonl"
  long_wav = str(bad_manifest).replace("train.jsonl", "long.wav")
  path.write_text(json.dumps({"audio": long_wav, "task": "asr", "lang": "en", "text": "x"}) + "\n")
  sources = [{"name": "jsonl", "path": str(path)}]
  truncate = make_train_iterator(config(sources=sources, long_audio="truncate", seq_buckets=(1024,)),
                                 global_batch_size=1, process_index=0, process_count=1, seed=0)
  batch = next(truncate)
  assert batch["audio_lengths"].tolist() == [1500] and truncate.metrics()["truncated"] == 1
  assert batch["num_tokens"].tolist() == [1 + 750 + 1 + 6 + 2]  # <audio> 750 </audio>, 6 tags, "x", eod
  chunk = make_train_iterator(config(sources=sources, long_audio="chunk", max_audios=2,
                                     seq_buckets=(1024,)), global_batch_size=1, process_index=0,
                              process_count=1, seed=0)
  batch = next(chunk)
  assert batch["audio_lengths"].tolist() == [1500, 50]  # 30 s + 1 s windows
  assert batch["num_tokens"].tolist() == [752 + 27 + 6 + 2] and chunk.metrics()["bad"] == 0


# --- determinism and resume across process counts --------------------------------------------

@pytest.fixture(scope="module")
def single_process_run():
  it = make_train_iterator(config(), global_batch_size=4, process_index=0, process_count=1, seed=5)
  return take(it, 4)


def test_two_processes_build_the_same_global_batches(single_process_run):
  per_process = [take(make_train_iterator(config(), global_batch_size=4, process_index=p,
                                          process_count=2, seed=5), 3) for p in range(2)]
  for g in range(3):
    assert_same_rows(real_rows([per_process[0][g], per_process[1][g]]),
                     real_rows([single_process_run[g]]))


def test_resume_is_exact_on_the_same_and_another_process_count(single_process_run):
  it = make_train_iterator(config(), global_batch_size=4, process_index=0, process_count=1, seed=5)
  take(it, 2)
  state = json.loads(json.dumps(it.get_state()))
  assert state["global_batches"] == 2
  same = make_train_iterator(config(), global_batch_size=4, process_index=0, process_count=1, seed=5)
  same.set_state(state)
  for got, want in zip(take(same, 2), single_process_run[2:]):
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])  # bitwise, every field
  resumed = []
  for p in range(2):
    other = make_train_iterator(config(), global_batch_size=4, process_index=p, process_count=2, seed=5)
    other.set_state(state)
    resumed.append(take(other, 2))
  for g in range(2):
    assert_same_rows(real_rows([resumed[0][g], resumed[1][g]]), real_rows([single_process_run[2 + g]]))


def test_state_from_a_different_order_is_rejected(single_process_run):
  it = make_train_iterator(config(), global_batch_size=4, process_index=0, process_count=1, seed=5)
  state = it.get_state()
  other = make_train_iterator(config(), global_batch_size=4, process_index=0, process_count=1, seed=6)
  with pytest.raises(ValueError, match="seed differs"):
    other.set_state(state)
  with pytest.raises(ValueError, match="multiple of process_count"):
    make_train_iterator(config(), global_batch_size=3, process_index=0, process_count=2, seed=5)


# --- eval ----------------------------------------------------------------------------------------

def test_eval_batches_left_padded_sharded_and_errors_kept(tmp_path):
  rows = []
  for i, task in enumerate(("asr", "asc", "aqa")):
    record = synthetic.generate(task, i, split="test")
    (tmp_path / f"{i}.wav").write_bytes(record["audio"])
    prompt = {"asr": "<|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>",
              "asc": "<|startofanalysis|><|unknown|><|keyword|><|en|><|notimestamps|><|scene|>",
              "aqa": f"<|startofanalysis|><|en|><|question|>{record['question']}<|answer|>"}[task]
    rows.append({"audio": f"{i}.wav", "prompt": prompt, "gt": record["text"], "source": f"synth_{task}"})
  rows.append({"audio": "missing.wav", "prompt": rows[0]["prompt"], "gt": "x", "source": "synth_asr"})
  path = tmp_path / "eval.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  records = make_eval_examples({"name": "eval_jsonl", "path": str(path)})
  shards = [list(make_eval_batches(records, config(), batch_size=1, process_index=p, process_count=2))
            for p in range(2)]
  assert [len(s) for s in shards] == [2, 2]
  seen = {}
  for shard in shards:
    for batch, infos in shard:
      (info,) = infos
      seen[info.index] = info
      if info.error is None:
        assert batch["example_mask"].tolist() == [1]
        assert batch["attention_mask"][0, -1] == 1 and batch["positions"][0, -1] == batch["num_tokens"][0] - 1
        assert batch["input_ids"][0, -1] != 151643  # the prompt's last tag sits in the last column
      else:
        assert batch["example_mask"].tolist() == [0] and not batch["attention_mask"].any()
  assert sorted(seen) == [0, 1, 2, 3]
  assert "missing.wav" in seen[3].error and seen[0].max_new_tokens == 256 and seen[1].max_new_tokens == 10
  assert seen[2].gt == rows[2]["gt"] and seen[1].task == "asc"
