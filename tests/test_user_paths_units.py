"""The pieces behind the user paths, in-process: data fields, manifest kinds, Qwen2-Audio prompts, model
fields, checkpoint resolution, resume diffs, first-batch checks, permissions, verify thresholds, embed
and demo flags."""

import json
import os
import re
import stat

import jax
import numpy as np
import pytest

from qwen_audio_jax import checkpoint_io, demo, embed, files
from qwen_audio_jax.data import ExampleEncoder, config as data_config, manifests, synthetic
from qwen_audio_jax.model import config as model_config
from qwen_audio_jax.model import params as params_lib
from qwen_audio_jax.orbax_write import atomic_directory
from qwen_audio_jax.train import defaults, loop, model_fns, preflight, testing


# --- data from scalar fields ------------------------------------------------------------------------------

def test_train_fields_replace_sources_with_weights_in_order():
  cfg = data_config.as_config({"train_manifest": "a.jsonl, b.jsonl", "corpus": "librispeech:/d/LS:train-clean-100",
                               "train_weights": "0.5,0.3,0.2"})
  assert data_config.source_entries(cfg) == [
      {"name": "manifest", "path": "a.jsonl", "weight": 0.5}, {"name": "manifest", "path": "b.jsonl", "weight": 0.3},
      {"name": "librispeech", "manual_dir": "/d/LS", "split": "train-clean-100", "weight": 0.2}]
  # a folder URL keeps its colon; a missing split is the corpus default
  cfg = data_config.as_config({"corpus": "aishell1:gs://bucket/aishell"})
  assert data_config.source_entries(cfg) == [{"name": "aishell1", "manual_dir": "gs://bucket/aishell", "weight": 1.0}]


@pytest.mark.parametrize("fields, message", [
    ({"train_manifest": "a.jsonl", "train_weights": "1,2"},
     "train_weights has 2 value(s) but train_manifest + corpus name 1"),
    ({"train_manifest": "a.jsonl", "train_weights": "x"}, "comma-separated numbers"),
    ({"corpus": "librispeach:/d"}, "unknown corpus 'librispeach'"),
    ({"corpus": "librispeech"}, "use NAME:DIR[:SPLIT]"),
    ({"eval_corpus": "librispeech:/d/LS"}, "needs a split"),
    ({"train_weights": "1"}, "train_manifest and corpus are empty"),
    ({"sources": []}, "no training data; set data.train_manifest"),
])
def test_bad_data_fields_are_one_line(fields, message):
  with pytest.raises(data_config.DataConfigError, match=re.escape(message)):
    data_config.as_config(fields)


def test_eval_data_is_only_what_the_eval_fields_name():
  named = data_config.as_config({"train_manifest": "train.jsonl", "eval_manifest": "dev.jsonl"})
  assert data_config.eval_entries(named) == [{"name": "manifest", "path": "dev.jsonl"}]
  assert data_config.eval_entries(data_config.as_config({"train_manifest": "train.jsonl"})) is None  # never train
  table = data_config.as_config({"train_manifest": "t.jsonl", "eval_sources": [{"name": "jsonl", "path": "e.jsonl"}]})
  assert data_config.eval_entries(table) == [{"name": "jsonl", "path": "e.jsonl"}]
  synthetic_only = data_config.as_config({})
  assert data_config.eval_entries(synthetic_only, "validation")[0]["split"] == "validation"  # its held-out split


def test_manifest_kind_is_read_off_the_fields(tmp_path):
  task = tmp_path / "task.jsonl"
  task.write_text(json.dumps({"audio": "a.wav", "task": "asr", "lang": "en", "text": "hi"}) + "\n")
  ev = tmp_path / "eval.jsonl"
  ev.write_text(json.dumps({"audio": "a.wav", "prompt": "<|startoftranscript|><|en|><|transcribe|>", "gt": "hi",
                            "source": "x"}) + "\n")
  assert manifests.manifest_kind(task).name == "task" and manifests.manifest_kind(ev).name == "eval"
  assert manifests.read_manifest(ev)[0]["task"] == "asr" and manifests.read_manifest(task)[0]["text"] == "hi"
  odd = tmp_path / "odd.jsonl"
  odd.write_text(json.dumps({"wav": "a.wav", "words": "hi"}) + "\n")
  with pytest.raises(manifests.ManifestError, match=r"odd.jsonl:1: fields \['wav', 'words'\] match no manifest kind"):
    manifests.read_manifest(odd)
  # adding a kind is one row of the table
  kind = manifests.ManifestKind("words", frozenset({"wav", "words"}), lambda p: [{"kind": "words"}])
  manifests.MANIFEST_KINDS.append(kind)
  try:
    assert manifests.read_manifest(odd) == [{"kind": "words"}]
  finally:
    manifests.MANIFEST_KINDS.remove(kind)


# --- Qwen2-Audio prompts ------------------------------------------------------------------------------------

def test_qwen2_audio_records_without_prompt_get_natural_language_prompts():
  encoder = ExampleEncoder(family="qwen2-audio", max_tokens=512)
  record = synthetic.generate("asr", 1)
  assert encoder.prompt_text(record) == "Detect the language and recognize the speech: <|en|>"
  example = encoder.encode(record)
  text = encoder.tokenizer.decode(example.ids[:example.prompt_length].tolist())
  assert text.endswith("<|audio_eos|>Detect the language and recognize the speech: <|en|>")
  assert example.loss_mask.sum() > 1
  assert encoder.prompt_text(dict(record, prompt="Say it:")) == "Say it:"  # the record's own prompt wins
  aqa = synthetic.generate("aqa", 2)
  assert aqa["question"] in encoder.prompt_text(aqa)
  with pytest.raises(ValueError, match="tgt='xx' is not one of"):
    encoder.prompt_text(dict(record, task="s2tt", text_lang="xx"))


# --- model fields ------------------------------------------------------------------------------------------

def test_every_model_field_is_a_config_field():
  block = defaults.model_block("qwen2-audio-7b", dtype="bfloat16")
  block.preset = "tiny-qwen2-audio"  # what --config.model.preset=... does after the config file
  block.decoder.n_layers = 3
  cfg = model_fns.resolve_model_config(block)
  tiny = model_config.PRESETS["tiny-qwen2-audio"]
  assert cfg == tiny.replace(dtype="bfloat16", decoder=tiny.decoder.__class__(
      **{**model_config.to_dict(tiny)["decoder"], "n_layers": 3}))
  legacy = {"preset": "tiny-qwen-audio", "overrides": {"dtype": "bfloat16"}}  # config files written before
  assert model_fns.resolve_model_config(legacy).dtype == "bfloat16"
  with pytest.raises(KeyError, match="model.remat_policy='fulll'; use one of none, full, minimal"):
    model_fns.resolve_model_config(defaults.model_block("tiny-qwen-audio", remat_policy="fulll"))


# --- checkpoint resolution ---------------------------------------------------------------------------------

def _fake_run(root, steps=(1, 3), best=((3, 2.5), (1, 2.0))):
  """A run's folder layout with its JSON parts only (resolution never reads arrays)."""
  meta = {"model": model_config.to_dict(model_config.PRESETS["tiny-qwen-audio"]), "tokenizer": {"family": "qwen-audio"}}
  for kind, item, entries in (("checkpoints", "state", [(s, None) for s in steps]), ("best", "params", list(best))):
    for step, loss in entries:
      folder = os.path.join(root, kind, str(step))
      os.makedirs(os.path.join(folder, item))
      os.makedirs(os.path.join(folder, "meta"))
      open(os.path.join(folder, "_CHECKPOINT_METADATA"), "w").write("{}")
      json.dump(meta, open(os.path.join(folder, "meta", "metadata"), "w"))
      if loss is not None:
        os.makedirs(os.path.join(folder, "metrics"))
        json.dump({"eval_loss": loss}, open(os.path.join(folder, "metrics", "metrics"), "w"))
  os.makedirs(os.path.join(root, "checkpoints", "5.orbax-checkpoint-tmp-1", "state"))  # unfinished: ignored
  return root


def test_a_workdir_resolves_to_its_best_else_latest_step(tmp_path):
  run = _fake_run(str(tmp_path / "run"))
  best = checkpoint_io.resolve(run)
  assert (best.kind, best.step, best.tree_dir) == ("run-best", 1, os.path.join(run, "best", "1", "params"))
  assert checkpoint_io.resolve(run, "latest").step == 3 and checkpoint_io.resolve(run + "@latest").kind == "run-latest"
  assert checkpoint_io.resolve(run, 3).kind == "run-latest"  # a step kept in both: the full state
  assert checkpoint_io.resolve(os.path.join(run, "best", "3")).kind == "run-best"
  assert best.config == model_config.PRESETS["tiny-qwen-audio"] and best.metadata["tokenizer"]["family"] == "qwen-audio"
  only_latest = _fake_run(str(tmp_path / "run2"), best=())
  assert checkpoint_io.resolve(only_latest).kind == "run-latest"
  with pytest.raises(checkpoint_io.CheckpointError, match=r"no finished checkpoint for step 2 \(kept: best \[1, 3\]"):
    checkpoint_io.resolve(run, 2)
  with pytest.raises(checkpoint_io.CheckpointError, match="checkpoints/5: unfinished or damaged"):
    os.makedirs(os.path.join(run, "checkpoints", "5", "state"))
    checkpoint_io.resolve(os.path.join(run, "checkpoints", "5"))
  with pytest.raises(checkpoint_io.CheckpointError, match="not a model checkpoint"):
    checkpoint_io.resolve(str(tmp_path))
  with pytest.raises(checkpoint_io.CheckpointError, match="no such checkpoint directory"):
    checkpoint_io.resolve(str(tmp_path / "nope"))


def test_resume_diff_names_the_fields():
  stored = {"model": {"decoder": {"n_layers": 2}}, "layout": {"train.batch_size": 8, "data.sources": [{"path": "a"}]}}
  new = {"model": {"decoder": {"n_layers": 4}}, "layout": {"train.batch_size": 8, "data.sources": [{"path": "b"}]}}
  assert preflight.differences(stored, new) == ["data.sources.0.path: a -> b", "model.decoder.n_layers: 2 -> 4"]


def test_first_batch_without_examples_or_answer_tokens_stops():
  class Data:
    def metrics(self):
      return {"last_bad": "src:1 (x.wav): AudioError: cannot decode"}
  ok = {"example_mask": np.array([1, 0]), "loss_mask": np.array([[0, 1], [0, 0]])}
  loop.check_first_batch(ok, Data())
  with pytest.raises(preflight.DataError, match="all 2 examples of the first batch were rejected; last: src:1"):
    loop.check_first_batch({**ok, "example_mask": np.zeros(2, int)}, Data())
  with pytest.raises(preflight.DataError, match="no answer tokens"):
    loop.check_first_batch({**ok, "loss_mask": np.zeros((2, 2), int)}, Data())


# --- files follow the umask --------------------------------------------------------------------------------

@pytest.mark.parametrize("mask, dir_mode, file_mode", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_atomic_directories_follow_the_umask(tmp_path, mask, dir_mode, file_mode):
  previous = os.umask(mask)
  try:
    with atomic_directory(str(tmp_path / "out")) as tmp:
      os.makedirs(os.path.join(tmp, "sub"))
      fd = os.open(os.path.join(tmp, "sub", "f"), os.O_CREAT | os.O_WRONLY, 0o600)  # like mkstemp / some writers
      os.close(fd)
    files.write_json_atomic(str(tmp_path / "out" / "c.json"), {"a": 1})
  finally:
    os.umask(previous)
  mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)
  assert mode(tmp_path / "out") == dir_mode and mode(tmp_path / "out" / "sub") == dir_mode
  assert mode(tmp_path / "out" / "sub" / "f") == file_mode and mode(tmp_path / "out" / "c.json") == file_mode


# --- verify thresholds -------------------------------------------------------------------------------------

def test_verify_thresholds_are_finite_and_nan_fails():
  from conversion import verify  # pylint: disable=import-outside-toplevel
  assert all(np.isfinite(v).all() for v in verify.THRESHOLDS.values())
  good = {"encoder": {"max_abs": 0.01, "ref_scale": 2.0}}
  assert verify.failures(good, 0.05, 0.015, 0.9) == []
  assert verify.failures({"encoder": {"max_abs": 0.2, "ref_scale": 2.0}}, 0.05, 0.015, 0.9)
  assert verify.failures({"encoder": {"max_abs": float("nan"), "ref_scale": 2.0}}, 0.05, 0.015, 0.9)
  with pytest.raises(SystemExit):
    verify.main(["--checkpoint=x", "--reference=y", "--source=hf-whisper", "--atol=inf"])


def test_bf16_verify_passes_and_fails_when_parity_fails(tmp_path, capsys):
  from conversion import convert, tiny_models, verify  # pylint: disable=import-outside-toplevel
  src = str(tmp_path / "whisper")
  tiny_models.hf_whisper(src)
  out = str(tmp_path / "bf16")
  assert convert.main(["--source=hf-whisper", f"--input={src}", f"--output={out}", "--dtype=bfloat16", "--verify"]) == 0
  assert "parity OK (dtype bfloat16, rtol 0.05" in capsys.readouterr().out
  cfg, params, meta = checkpoint_io.load_model_checkpoint(out)
  flat = checkpoint_io.flatten(params)
  flat["audio_encoder/conv2/kernel"] = flat["audio_encoder/conv2/kernel"] * 1.3  # a wrong transform
  bad = str(tmp_path / "bad")
  checkpoint_io.save_model_checkpoint(bad, cfg, checkpoint_io.unflatten(flat), meta)
  assert verify.main([f"--checkpoint={bad}", f"--reference={src}", "--source=hf-whisper"]) == 1
  assert "PARITY FAILED: encoder max|Δ|" in capsys.readouterr().out
  from conversion import export  # pylint: disable=import-outside-toplevel
  previous = os.umask(0o022)
  try:  # the openai .pt goes through mkstemp (0600) before its rename
    assert export.main([f"--checkpoint={out}", "--target=openai-whisper", f"--output={tmp_path / 'w.pt'}"]) == 0
  finally:
    os.umask(previous)
  assert stat.S_IMODE(os.stat(tmp_path / "w.pt").st_mode) == 0o644


# --- embed and demo flags ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
  cfg = model_config.get_config("tiny-qwen-audio")
  path = str(tmp_path_factory.mktemp("embed") / "ckpt")
  checkpoint_io.save_model_checkpoint(path, cfg, params_lib.init_params(cfg, jax.random.PRNGKey(0)),
                                      {"tokenizer": {"family": "qwen-audio"}})
  return path


def test_embed_prints_the_path_it_wrote_and_refuses_clips_without_audio_tokens(tiny_checkpoint, tmp_path, capsys):
  import soundfile  # pylint: disable=import-outside-toplevel
  clip = str(tmp_path / "c.wav")
  soundfile.write(clip, np.zeros(16000, np.float32), 16000)
  assert embed.main([f"--checkpoint={tiny_checkpoint}", f"--audio={clip}", f"--output={tmp_path / 'x'}"]) == 0
  assert f"wrote {tmp_path / 'x'}.npy" in capsys.readouterr().out
  assert np.load(str(tmp_path / "x.npy")).shape == (25 + 2, 64) and (tmp_path / "x.json").exists()
  short = str(tmp_path / "s.wav")
  soundfile.write(short, np.zeros(80, np.float32), 16000)  # 5 ms
  assert embed.main([f"--checkpoint={tiny_checkpoint}", f"--audio={short}", f"--output={tmp_path / 'y'}"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "5.0 ms of audio gives no qwen-audio audio token; clips need at least 30 ms" in err[0]
  assert not (tmp_path / "y.npy").exists()


def test_long_audio_flag_is_the_same_everywhere(jfk_path, capsys):
  assert demo.main([f"--audio={jfk_path}", "--long_audio=truncate"]) == 0
  assert demo.main([f"--audio={jfk_path}", "--policy=error"]) == 0  # deprecated alias still accepted
  capsys.readouterr()
  with pytest.raises(SystemExit):
    demo.main([f"--audio={jfk_path}", "--long_audio=drop"])


def test_write_user_manifests_makes_distinct_train_and_eval_data(tmp_path):
  paths = testing.write_user_manifests(str(tmp_path))
  train = manifests.read_manifest(paths["train"])
  dev = manifests.read_manifest(paths["dev"])
  assert len(dev) == 1 and dev[0]["text"] not in {r["text"] for r in train} | {""}


def test_a_large_model_on_the_synthetic_set_is_warned_loudly(capsys):
  synthetic_entries = [{"name": "synthetic", "split": "train"}]
  preflight.warn_large_synthetic(synthetic_entries, preflight.model_params(model_config.PRESETS["qwen-audio-7b"]))
  err = capsys.readouterr().err
  assert "WARNING: a 8.4 B-parameter model is training on the built-in SYNTHETIC" in err
  assert "--config.data.train_manifest" in err
  preflight.warn_large_synthetic(synthetic_entries, preflight.model_params(model_config.PRESETS["tiny-qwen-audio"]))
  preflight.warn_large_synthetic([{"name": "manifest", "path": "a.jsonl"}], 8_400_000_000)
  assert capsys.readouterr().err == ""
