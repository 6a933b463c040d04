"""Conversion end to end on tiny random PyTorch models: every source format converts, the JAX model matches
the PyTorch reference (fp32, 1e-4), export round trips are bit-exact, exports load in transformers, compose
and embed work. One set of tiny models and conversions per module."""

import hashlib
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conversion import compose, convert, export, reference, tiny_models, verify  # noqa: E402
from conversion.readers import TensorSource  # noqa: E402
from qwen_audio_jax import checkpoint_io, embed  # noqa: E402
from qwen_audio_jax.audio import features_for_clip, lengths  # noqa: E402

# Relative error max|d| / max|ref| vs the PyTorch reference: measured 3e-7..9e-7 (fp32, CPU); ~5x margin.
REL_TOL = 5e-6
FLAGS = ("hf-whisper", "openai-whisper", "hf-qwen", "hf-qwen-audio", "hf-qwen2-audio")
quiet = lambda *a, **k: None


@pytest.fixture(scope="module")
def src(tmp_path_factory):
  """{flag: (path, in-memory reference model or None)} for every source format."""
  root = tmp_path_factory.mktemp("sources")
  whisper = tiny_models.hf_whisper(str(root / "hf-whisper"))
  tiny_models.openai_whisper(str(root / "large.pt"), whisper, dtype=torch.float16)
  qwen = tiny_models.hf_qwen(str(root / "qwen-7b"))
  qwen2_audio = tiny_models.hf_qwen2_audio(str(root / "qwen2-audio"))
  tiny_models.hf_qwen_audio(str(root / "qwen-audio"))
  return {"hf-whisper": (str(root / "hf-whisper"), whisper), "openai-whisper": (str(root / "large.pt"), None),
          "hf-qwen": (str(root / "qwen-7b"), qwen), "hf-qwen-audio": (str(root / "qwen-audio"), None),
          "hf-qwen2-audio": (str(root / "qwen2-audio"), qwen2_audio)}


@pytest.fixture(scope="module")
def ckpt(src, tmp_path_factory):
  out = tmp_path_factory.mktemp("converted")
  return {flag: convert.convert(flag, src[flag][0], str(out / flag), log=quiet) for flag in FLAGS}


def _reference(flag, src):
  """In-memory transformers models where the test has them (no renames at all), else reference.build."""
  path, model = src[flag]
  if flag == "hf-whisper":
    enc = model.model.encoder
    return reference.Reference(encode=lambda mel, frames=None: reference.run_encoder(enc, mel),
                               logits=reference.whisper_logits(model))
  if flag == "hf-qwen":
    return reference.Reference(logits=lambda ids, mel, frames: reference.lm_logits(model, ids))
  return reference.build(flag, path)


@pytest.mark.parametrize("flag", FLAGS)
def test_jax_matches_pytorch_reference(flag, src, ckpt):
  report = verify.compare(ckpt[flag], _reference(flag, src), seconds=2.5)
  print(flag, report)
  assert set(report) == ({"logits"} if flag == "hf-qwen" else {"encoder", "logits"})
  for stats in report.values():
    assert stats["ref_scale"] > 0.1 and stats["max_abs"] / stats["ref_scale"] <= REL_TOL
  if "logits" in report:
    assert report["logits"]["kl_mean"] < 1e-8 and report["logits"]["top1"] == 1.0


@pytest.mark.parametrize("flag", FLAGS)
def test_round_trip_is_bit_exact(flag, src, ckpt, tmp_path):
  out = str(tmp_path / ("x.pt" if flag == "openai-whisper" else "x"))
  export.export(ckpt[flag], flag, out, log=quiet)
  a, b = TensorSource(src[flag][0]), TensorSource(out)
  assert sorted(a.infos) == sorted(b.infos)
  for name, info in a.infos.items():
    assert b.infos[name].dtype == info.dtype, name
    assert a.read(name).tobytes() == b.read(name).tobytes(), name
  if flag != "openai-whisper":
    src_cfg = json.load(open(os.path.join(src[flag][0], "config.json")))
    assert json.load(open(os.path.join(out, "config.json"))) == src_cfg


def test_metadata_records_hashes_and_carried_tensors(src, ckpt):
  meta = checkpoint_io.read_metadata(ckpt["hf-whisper"])
  (entry,) = meta["sources"]
  weights = os.path.join(src["hf-whisper"][0], "model.safetensors")
  assert entry["sha256"]["model.safetensors"] == hashlib.sha256(open(weights, "rb").read()).hexdigest()
  assert entry["carried"] == {}  # the text decoder is mapped; transformers saved no proj_out (tied)
  assert any(n.startswith("model.decoder.layers.0.encoder_attn.") for n in entry["mapped"])
  assert meta["tokenizer"]["family"] == "whisper" and meta["dtype"] == "float32"
  assert len(entry["mapped"]) + len(entry["carried"]) == len(TensorSource(src["hf-whisper"][0]).infos)
  # The openai .pt had no optional tensor missing; every parameter came from a source tensor.
  assert checkpoint_io.read_metadata(ckpt["openai-whisper"])["sources"][0]["generated"] == []


def test_exported_whisper_loads_in_transformers(src, ckpt, tmp_path):
  """hf -> ours -> hf: identical logits; openai fp16 -> ours -> hf: every weight = fp16-rounded original."""
  model = src["hf-whisper"][1]
  export.export(ckpt["hf-whisper"], "hf-whisper", str(tmp_path / "a"), log=quiet)
  export.export(ckpt["openai-whisper"], "hf-whisper", str(tmp_path / "b"), log=quiet)
  feats = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 80, 3000)).astype(np.float32))
  dec = torch.tensor([[3, 5, 7, 9]])
  again = transformers.WhisperForConditionalGeneration.from_pretrained(str(tmp_path / "a")).eval()
  with torch.no_grad():
    assert torch.equal(again(input_features=feats, decoder_input_ids=dec).logits,
                       model(input_features=feats, decoder_input_ids=dec).logits)
  from_openai, info = transformers.WhisperForConditionalGeneration.from_pretrained(
      str(tmp_path / "b"), output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"]
  ref = model.state_dict()
  for name, t in from_openai.state_dict().items():
    assert torch.equal(t, ref[name].half().to(t.dtype)), name


def test_exported_qwen2_audio_gives_reference_logits(src, ckpt, tmp_path):
  model = src["hf-qwen2-audio"][1]
  export.export(ckpt["hf-qwen2-audio"], "hf-qwen2-audio", str(tmp_path / "q"), log=quiet)
  again = transformers.Qwen2AudioForConditionalGeneration.from_pretrained(
      str(tmp_path / "q"), attn_implementation="eager").eval()
  ref = reference.Reference(logits=reference.qwen2_audio(src["hf-qwen2-audio"][0]).logits)
  cfg = checkpoint_io.read_config(ckpt["hf-qwen2-audio"])
  mel, frames = verify.sample_mel(128, seconds=2.5)
  ids = verify.sample_ids(cfg, reference.Reference(audio_ids={"pad": model.config.audio_token_index}), 8,
                          int(lengths.pooled_frames(frames)))
  kw = dict(input_features=torch.from_numpy(np.array(mel)),
            feature_attention_mask=(torch.arange(3000) < 2 * frames).long()[None])
  with torch.no_grad():
    out = again(input_ids=torch.from_numpy(ids), **kw).logits[0].numpy()
    expected = model(input_ids=torch.from_numpy(ids), **kw).logits[0].numpy()
  assert np.array_equal(out, expected) and np.array_equal(out, ref.logits(ids, mel, frames))


def test_bfloat16_conversion(src, tmp_path):
  path, model = src["hf-qwen2-audio"]
  out = convert.convert("hf-qwen2-audio", path, str(tmp_path / "bf16"), dtype="bfloat16", log=quiet)
  assert {d for _, d in checkpoint_io.stored_shapes(out).values()} == {"bfloat16"}
  export.export(out, "hf-qwen2-audio", str(tmp_path / "back"), log=quiet)  # --dtype=source: float32 again
  back, orig = TensorSource(str(tmp_path / "back")), TensorSource(path)
  for name in orig.infos:
    assert back.infos[name].dtype == "float32"
    expected = torch.from_numpy(orig.read(name)).to(torch.bfloat16).float().numpy()
    assert np.array_equal(back.read(name), expected), name
  report = verify.compare(out, reference.build("hf-qwen2-audio", path), seconds=2.5)
  assert report["logits"]["kl_mean"] < 1e-3 and report["logits"]["top1"] >= 0.9


def test_load_model_checkpoint_restores_tree(ckpt):
  cfg, params, meta = checkpoint_io.load_model_checkpoint(ckpt["hf-qwen-audio"], dtype="bfloat16")
  assert cfg.family == "qwen-audio" and meta["sources"][0]["format"] == "hf-qwen-audio"
  q = params["decoder"]["layers"]["attn"]["q"]["kernel"]
  assert q.shape == (2, 32, 32) and str(q.dtype) == "bfloat16"
  assert params["audio_bos_eos"]["embedding"].shape == (2, 32)
  with pytest.raises(checkpoint_io.CheckpointError, match="audio_projector/kernel"):
    checkpoint_io.check_params({**params, "audio_projector": {"kernel": np.zeros((3, 3)), "bias": np.zeros(32)}},
                               cfg)


def test_compose_builds_untrained_qwen_audio(src, ckpt, tmp_path):
  paths = dict(whisper_path=src["openai-whisper"][0], qwen_path=src["hf-qwen"][0], log=quiet)
  a = compose.compose(output=str(tmp_path / "a"), seed=0, **paths)
  b = compose.compose(output=str(tmp_path / "b"), seed=0, **paths)
  c = compose.compose(output=str(tmp_path / "c"), seed=1, **paths)
  cfg, pa, meta = checkpoint_io.load_model_checkpoint(a)
  _, pb, _ = checkpoint_io.load_model_checkpoint(b)
  _, pc, _ = checkpoint_io.load_model_checkpoint(c)
  _, whisper, _ = checkpoint_io.load_model_checkpoint(ckpt["openai-whisper"])
  _, qwen, _ = checkpoint_io.load_model_checkpoint(ckpt["hf-qwen"])
  assert cfg.family == "qwen-audio" and cfg.encoder.pool and cfg.decoder.vocab_size == 155947
  assert meta["compose"]["seed"] == 0 and [s["format"] for s in meta["sources"]] == ["openai-whisper", "hf-qwen"]
  np.testing.assert_array_equal(pa["audio_encoder"]["layers"]["mlp"]["fc1"]["kernel"],
                                whisper["audio_encoder"]["layers"]["mlp"]["fc1"]["kernel"])
  np.testing.assert_array_equal(pa["decoder"]["layers"]["attn"]["v"]["kernel"],
                                qwen["decoder"]["layers"]["attn"]["v"]["kernel"])
  emb, old = np.asarray(pa["decoder"]["embed"]["embedding"]), np.asarray(qwen["decoder"]["embed"]["embedding"])
  np.testing.assert_array_equal(emb[:512], old)
  assert np.abs(emb[512:].mean(0) - old.mean(0)).max() < 1e-3 and 0 < emb[512:].std(0).mean() < 0.01 * old.std()
  head = np.asarray(pa["decoder"]["lm_head"]["kernel"])
  np.testing.assert_array_equal(head[:, :512], qwen["decoder"]["lm_head"]["kernel"])
  for key in ("audio_projector", "audio_bos_eos", "decoder"):  # deterministic per seed
    for x, y, z in zip(*(jax_leaves(p[key]) for p in (pa, pb, pc))):
      assert np.array_equal(x, y)
  assert not np.array_equal(pa["audio_projector"]["kernel"], pc["audio_projector"]["kernel"])
  assert abs(float(np.std(pa["audio_projector"]["kernel"])) - 0.02) < 0.005
  # The composed model exports in Qwen-Audio's own layout and converts back to the same parameters.
  export.export(a, "hf-qwen-audio", str(tmp_path / "qa"), log=quiet)
  back = convert.convert("hf-qwen-audio", str(tmp_path / "qa"), str(tmp_path / "back"), log=quiet)
  _, pd, _ = checkpoint_io.load_model_checkpoint(back)
  assert all(np.array_equal(x, y) for x, y in zip(jax_leaves(pa), jax_leaves(pd)))


@pytest.mark.parametrize("flag", ["hf-qwen", "hf-qwen-audio", "hf-qwen2-audio"])
def test_padded_vocabulary_converts_matches_reference_and_exports_unpadded(flag, src, ckpt, tmp_path):
  """--vocab_pad_to=384 (128 x tensor=3; divides none of the vocabularies): zero rows appended (the config
  keeps the true vocab_size), same logits as the PyTorch reference, and the export strips the rows again
  (bit-exact round trip)."""
  out = convert.convert(flag, src[flag][0], str(tmp_path / "padded"), log=quiet, vocab_pad_to=384)
  cfg, params, _ = checkpoint_io.load_model_checkpoint(out)
  plain = checkpoint_io.read_config(ckpt[flag])
  assert cfg.decoder.vocab_size == plain.decoder.vocab_size and cfg.decoder.vocab_pad_to == 384
  v, vp = cfg.decoder.vocab_size, cfg.decoder.padded_vocab
  assert vp % 384 == 0 and vp > v
  emb = np.asarray(params["decoder"]["embed"]["embedding"])
  head = np.asarray(params["decoder"]["lm_head"]["kernel"])
  assert emb.shape[0] == head.shape[1] == vp and not emb[v:].any() and not head[:, v:].any()
  report = verify.compare(out, _reference(flag, src), seconds=2.5)
  stats = report["logits"]
  assert stats["max_abs"] / stats["ref_scale"] <= REL_TOL and stats["top1"] == 1.0
  export.export(out, flag, str(tmp_path / "x"), log=quiet)
  a, b = TensorSource(src[flag][0]), TensorSource(str(tmp_path / "x"))
  assert sorted(a.infos) == sorted(b.infos)
  assert all(a.read(n).tobytes() == b.read(n).tobytes() for n in a.infos)


def test_compose_pads_vocabulary_with_zero_rows(src, tmp_path):
  paths = dict(whisper_path=src["openai-whisper"][0], qwen_path=src["hf-qwen"][0], log=quiet, seed=0)
  _, plain, _ = checkpoint_io.load_model_checkpoint(compose.compose(output=str(tmp_path / "a"), **paths))
  cfg, padded, _ = checkpoint_io.load_model_checkpoint(
      compose.compose(output=str(tmp_path / "b"), vocab_pad_to=1024, **paths))
  assert cfg.decoder.vocab_size == 155947 and cfg.decoder.padded_vocab == 156672
  for name, axis in (("embed", 0), ("lm_head", 1)):
    x = np.asarray(next(iter(padded["decoder"][name].values())))
    y = np.asarray(next(iter(plain["decoder"][name].values())))
    np.testing.assert_array_equal(np.take(x, np.arange(155947), axis=axis), y)  # same grown rows
    assert not np.take(x, np.arange(155947, 156672), axis=axis).any()


def jax_leaves(tree):
  import jax  # pylint: disable=import-outside-toplevel
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("flag,rows", [("hf-whisper", 1500), ("hf-qwen-audio", 275 + 2), ("hf-qwen2-audio", 275)])
def test_embed_cli_matches_reference(flag, rows, src, ckpt, tmp_path, jfk_path):
  out = str(tmp_path / "emb.npy")
  assert embed.main([f"--checkpoint={ckpt[flag]}", f"--audio={jfk_path}", f"--output={out}"]) == 0
  got = np.load(out)
  cfg = checkpoint_io.read_config(ckpt[flag])
  mel, info = features_for_clip(jfk_path, n_mels=cfg.encoder.n_mels)
  frames = info.windows[0].encoder_frames
  expected = _reference(flag, src).encode(np.asarray(mel), None if flag == "hf-whisper" else frames)
  if flag == "hf-qwen-audio":
    sd = TensorSource(src[flag][0])
    bos_eos = sd.read("transformer.audio.audio_bos_eos_token.weight")
    expected = np.concatenate([bos_eos[:1], expected, bos_eos[1:]])
  assert got.shape == expected.shape and got.shape[0] == rows
  rel = np.max(np.abs(got - expected)) / np.max(np.abs(expected))
  print(f"{flag} embeddings: max|d|/max|ref| = {rel:.2e}")
  assert rel <= REL_TOL
  assert json.load(open(str(tmp_path / "emb.json")))["rows_per_window"] == [rows]


def test_verify_cli_passes_and_fails(src, ckpt, tmp_path, capsys):
  path = src["hf-qwen"][0]
  assert convert.main(["--source=hf-qwen", f"--input={path}", f"--output={tmp_path / 'c'}", "--verify"]) == 0
  assert "parity OK" in capsys.readouterr().out
  args = [f"--checkpoint={ckpt['hf-qwen']}", "--source=hf-qwen"]
  other = str(tmp_path / "other-qwen")
  tiny_models.hf_qwen(other, seed=9)
  assert verify.main(args + [f"--reference={other}"]) == 1
  assert "PARITY FAILED" in capsys.readouterr().out
