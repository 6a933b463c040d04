"""Whisper conversion beyond the weights: the tied output projection, the tokenizer kept with the checkpoint,
the generation record, and older encoder-only conversions (text decoder carried) still loading/exporting."""

import json
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conversion import convert, export, record, tiny_models  # noqa: E402
from conversion.errors import ConversionError  # noqa: E402
from conversion.readers import TensorSource  # noqa: E402
from qwen_audio_jax import checkpoint_io  # noqa: E402
from qwen_audio_jax.model import whisper_decode  # noqa: E402
from qwen_audio_jax.tokenizer import get_whisper_tokenizer, whisper_prompt  # noqa: E402
from qwen_audio_jax.tokenizer.whisper_generation import read_generation  # noqa: E402

quiet = lambda *a, **k: None


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
  root = tmp_path_factory.mktemp("hfw")
  tiny_models.hf_whisper(str(root / "hf"))
  return str(root / "hf")


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
  """(tokenizer.json, vocab.tiktoken, model vocabulary size) of a small Whisper-style vocabulary."""
  json_path, tiktoken_path, n_ranks = tiny_models.whisper_vocab(str(tmp_path_factory.mktemp("vocab")))
  return json_path, tiktoken_path, n_ranks + 2 + 99 + 6 + 1501


@pytest.fixture(scope="module")
def openai_pt(vocab, tmp_path_factory):
  """An openai .pt whose vocabulary size is the small vocabulary's."""
  cfg = tiny_models.whisper_config()
  cfg.vocab_size = vocab[2]
  model = tiny_models.randomize(transformers.WhisperForConditionalGeneration(cfg), seed=5)
  path = str(tmp_path_factory.mktemp("openai") / "w.pt")
  tiny_models.openai_whisper(path, model, dtype=torch.float32)
  return path


def _with_proj_out(hf, directory, delta=0.0):
  """The hf folder with an explicit proj_out.weight (older transformers saves) = embedding + delta at [0, 0]."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  src = TensorSource(hf)
  state = {n: src.read(n) for n in src.infos}
  state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"].copy()
  state["proj_out.weight"][0, 0] += delta
  os.makedirs(directory)
  save_file(state, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
  for name in ("config.json", "generation_config.json"):
    with open(os.path.join(hf, name)) as f, open(os.path.join(directory, name), "w") as g:
      g.write(f.read())
  return directory


def test_tied_output_projection_is_carried_and_checked(hf, tmp_path):
  tied = _with_proj_out(hf, str(tmp_path / "tied"))
  out = convert.convert("hf-whisper", tied, str(tmp_path / "c"), log=quiet)
  assert list(checkpoint_io.read_metadata(out)["sources"][0]["carried"]) == ["proj_out.weight"]
  export.export(out, "hf-whisper", str(tmp_path / "back"), log=quiet)
  a, b = TensorSource(tied), TensorSource(str(tmp_path / "back"))
  assert sorted(a.infos) == sorted(b.infos)
  assert all(a.read(n).tobytes() == b.read(n).tobytes() for n in a.infos)
  untied = _with_proj_out(hf, str(tmp_path / "untied"), delta=1e-3)
  args = ["--source=hf-whisper", f"--input={untied}", f"--output={tmp_path / 'u'}"]
  assert convert.main(args) == 2 and not (tmp_path / "u").exists()
  with pytest.raises(ConversionError, match=r"proj_out.weight .* differs from model.decoder.embed_tokens.weight"):
    convert.convert("hf-whisper", untied, str(tmp_path / "u"), log=quiet)


def test_transformers_folder_keeps_its_generation_config(hf, tmp_path):
  out = convert.convert("hf-whisper", hf, str(tmp_path / "c"), log=quiet)
  g = read_generation(out)
  assert (g["decoder_start_token_id"], g["eos_token_id"], g["pad_token_id"]) == (3, 2, 0)
  assert g["suppress_tokens"] == [] and g["begin_suppress_tokens"] == [] and g["max_target_positions"] == 32
  assert g["no_timestamps_token_id"] is None and g["source"] == "generation_config.json"


def test_openai_checkpoint_with_its_vocabulary(vocab, openai_pt, tmp_path):
  _, tiktoken_path, n_vocab = vocab
  logs = []
  out = convert.convert("openai-whisper", openai_pt, str(tmp_path / "c"), log=logs.append, tokenizer=tiktoken_path)
  meta = checkpoint_io.read_metadata(out)
  assert meta["tokenizer"]["files"] == ["vocab.tiktoken"] and not any("no tokenizer" in m for m in logs)
  tok = get_whisper_tokenizer(out)  # from source_assets/, checked against the model's vocabulary size
  g = meta["generation"]
  assert tok.vocab_size == n_vocab and g["decoder_start_token_id"] == tok.sot == whisper_prompt(tok)[0]
  assert (g["eos_token_id"], g["no_timestamps_token_id"], g["timestamp_begin"]) == (
      tok.eot, tok.no_timestamps, tok.timestamp_begin)
  assert g["lang_to_id"]["<|de|>"] == tok.languages["de"] and g["task_to_id"]["translate"] == tok.translate
  assert g["begin_suppress_tokens"] == tok.encode(" ") + [tok.eot] and g["max_initial_timestamp_index"] == 50
  assert set(tok.non_speech_tokens()) < set(g["suppress_tokens"]) and tok.sot in g["suppress_tokens"]
  # Non-speech symbols: alone and after a space when one token; " -" / " '" only at a word start; the
  # first byte of a music note; ordinary punctuation and words stay.
  single = {s: tok.encode(s) for s in (" (", "(", " -", " '", " [", "<<", " ♪♪", "-", ",", " the")}
  assert all(len(ids) == 1 for ids in single.values()), single  # preconditions of this vocabulary
  non_speech = set(tok.non_speech_tokens())
  assert {single[s][0] for s in (" (", "(", " -", " '", " [", "<<", " ♪♪")} <= non_speech
  assert tok.encode("♫")[0] in non_speech and not {single[s][0] for s in ("-", ",", " the")} & non_speech


def test_openai_checkpoint_without_vocabulary(vocab, openai_pt, tmp_path, monkeypatch):
  logs = []
  out = convert.convert("openai-whisper", openai_pt, str(tmp_path / "bare"), log=logs.append)
  assert any("no tokenizer kept" in m for m in logs)
  g = read_generation(out)
  assert g["decoder_start_token_id"] is None and g["suppress_tokens"] is None and g["max_target_positions"] == 32
  # An installed openai-whisper package is found without importing it (here a stand-in with its layout).
  fake = tmp_path / "site" / "whisper"
  (fake / "assets").mkdir(parents=True)
  (fake / "__init__.py").write_text("raise ImportError('must not be imported')\n")
  (fake / "assets" / "gpt2.tiktoken").write_bytes(open(vocab[1], "rb").read())
  monkeypatch.syspath_prepend(str(tmp_path / "site"))
  out = convert.convert("openai-whisper", openai_pt, str(tmp_path / "found"), log=quiet)
  assert checkpoint_io.read_metadata(out)["tokenizer"]["files"] == ["gpt2.tiktoken"] and "whisper" not in sys.modules
  args = ["--source=openai-whisper", f"--input={openai_pt}", f"--output={tmp_path / 'bad'}", f"--tokenizer={vocab[0]}"]
  os.rename(vocab[0], vocab[0] + ".bak")  # a missing file
  try:
    assert convert.main(args) == 2 and not (tmp_path / "bad").exists()
  finally:
    os.rename(vocab[0] + ".bak", vocab[0])


def test_tokenizer_of_another_size_is_refused(hf, vocab, tmp_path, capsys):
  args = ["--source=hf-whisper", f"--input={hf}", f"--output={tmp_path / 'c'}", f"--tokenizer={vocab[1]}"]
  assert convert.main(args) == 2 and not (tmp_path / "c").exists()
  assert "cannot make a Whisper vocabulary of 96 ids" in capsys.readouterr().err


def test_older_encoder_only_conversion_still_loads_and_exports(hf, tmp_path):
  """Before the text decoder was mapped, it was carried in carried.safetensors and model_config.json had no
  text_decoder key: such checkpoints restore (encoder only) and export the same bytes as before."""
  new = convert.convert("hf-whisper", hf, str(tmp_path / "new"), log=quiet)
  cfg, params, meta = checkpoint_io.load_model_checkpoint(new)
  src = TensorSource(hf)
  decoder = sorted(n for n in src.infos if n.startswith("model.decoder."))
  entry = meta["sources"][0]
  entry["carried"] = record.tensor_table(src, decoder)
  entry["mapped"] = {n: t for n, t in entry["mapped"].items() if n not in decoder}
  del meta["generation"], meta["format"], meta["format_version"]
  old = str(tmp_path / "old")
  checkpoint_io.save_model_checkpoint(
      old, cfg.replace(text_decoder=None), {"audio_encoder": params["audio_encoder"]}, meta,
      write_extra=lambda tmp: record.write_carried(tmp, src, decoder, "hf-whisper"))
  config = json.load(open(os.path.join(old, "model_config.json")))
  del config["text_decoder"]
  json.dump(config, open(os.path.join(old, "model_config.json"), "w"))
  cfg_old, params_old, _ = checkpoint_io.load_model_checkpoint(old)
  assert cfg_old.text_decoder is None and set(params_old) == {"audio_encoder"}
  with pytest.raises(ValueError, match="reconvert the Whisper checkpoint"):
    whisper_decode.prefill(params_old, cfg_old, np.zeros((1, 80, 3000), np.float32), np.array([[3]]), 4)
  with pytest.raises(ValueError, match="no Whisper generation record"):
    read_generation(old)
  for target, name in (("hf-whisper", "a"), ("openai-whisper", "b.pt")):
    export.export(old, target, str(tmp_path / ("old-" + name)), log=quiet)
    export.export(new, target, str(tmp_path / ("new-" + name)), log=quiet)
    a, b = TensorSource(str(tmp_path / ("old-" + name))), TensorSource(str(tmp_path / ("new-" + name)))
    assert sorted(a.infos) == sorted(b.infos)
    assert all(a.read(n).tobytes() == b.read(n).tobytes() for n in a.infos), target
