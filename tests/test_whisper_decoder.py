"""Whisper's text decoder against transformers' WhisperForConditionalGeneration (tiny random model converted
from both source formats): teacher-forced logits, cached decoding, greedy ids vs generate(), batch
invariance, beam reordering with `take`, bf16 compute, input checks and parameter counts."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conversion import convert, tiny_models, verify  # noqa: E402
from qwen_audio_jax import checkpoint_io  # noqa: E402
from qwen_audio_jax.model import count_params, get_config, whisper_decode  # noqa: E402

PROMPTS = np.array([[3, 5, 7], [3, 6, 8], [3, 9, 4]])  # decoder_start (3) + two ids, as a Whisper prompt
SECONDS = (2.5, 9.0, 27.0)  # three clips of different lengths, each padded to the 30 s window
POSITION_SCALE = 5.0  # larger learned positions: greedy ids vary along the sequence (see `model`)
IDS = np.concatenate([PROMPTS, np.random.default_rng(0).integers(0, 96, size=(3, 9))], axis=1)  # + continuation
MAX_LEN = 23  # prompt + 20 greedy tokens; one cache size for every test (one compile per batch size)
quiet = lambda *a, **k: None

prefill = jax.jit(whisper_decode.prefill, static_argnames=("cfg", "max_length"))
step = jax.jit(whisper_decode.step, static_argnames=("cfg",))
forward_logits = jax.jit(whisper_decode.forward_logits, static_argnames=("cfg",))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  """(transformers model, {flag: converted checkpoint}). A random tiny model's greedy output repeats one id;
  scaling its positional table makes the ids change along the sequence, so position bugs show."""
  root = tmp_path_factory.mktemp("whisper")
  ref = tiny_models.hf_whisper(str(root / "hf"))
  with torch.no_grad():
    ref.model.decoder.embed_positions.weight.mul_(POSITION_SCALE)
  ref.save_pretrained(str(root / "hf"))
  tiny_models.openai_whisper(str(root / "w.pt"), ref, dtype=torch.float32)
  paths = {"hf-whisper": str(root / "hf"), "openai-whisper": str(root / "w.pt")}
  return ref, {flag: convert.convert(flag, p, str(root / f"{flag}-ckpt"), log=quiet) for flag, p in paths.items()}


def _load(ckpt, **kw):
  cfg, params, _ = checkpoint_io.load_model_checkpoint(ckpt)
  return cfg.replace(matmul_precision="highest", **kw), params


@pytest.fixture(scope="module")
def mel():
  return np.concatenate([verify.sample_mel(80, seconds=s, seed=i)[0] for i, s in enumerate(SECONDS)])


def _rel(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


def _hf_logits(ref, mel, ids):
  with torch.no_grad():
    return ref(input_features=torch.from_numpy(mel), decoder_input_ids=torch.from_numpy(ids)).logits.numpy()


@pytest.mark.parametrize("flag", ["hf-whisper", "openai-whisper"])
def test_teacher_forced_logits_match_transformers(flag, model, mel):
  ref, ckpts = model
  cfg, params = _load(ckpts[flag])
  ours = np.asarray(forward_logits(params, cfg, mel, IDS))
  theirs = _hf_logits(ref, mel, IDS)
  rel = _rel(ours, theirs)
  print(f"{flag}: teacher-forced logits max|d|/max|ref| = {rel:.2e}")
  assert ours.dtype == np.float32 and rel < 2e-6
  assert (ours.argmax(-1) == theirs.argmax(-1)).all()


def test_both_sources_give_the_same_parameters(model):
  _, ckpts = model
  a, b = (_load(ckpts[f])[1] for f in ("hf-whisper", "openai-whisper"))
  assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _decode(cfg, params, mel, ids, prompt_len=3):
  """Prefill ids[:, :prompt_len], then feed the rest one by one: logits [B, S - prompt_len + 1, V]."""
  logits, cache = prefill(params, cfg, mel, ids[:, :prompt_len], MAX_LEN)
  out = [logits]
  for i in range(prompt_len, ids.shape[1]):
    logits, cache = step(params, cfg, ids[:, i], cache)
    out.append(logits)
  return np.stack([np.asarray(x) for x in out], axis=1), cache


def test_cached_decoding_equals_full_forward(model, mel):
  cfg, params = _load(model[1]["hf-whisper"])
  cached, cache = _decode(cfg, params, mel, IDS)
  full = np.asarray(forward_logits(params, cfg, mel, IDS))[:, 2:]
  rel = _rel(cached, full)
  print(f"cached vs full forward: max|d|/max|ref| = {rel:.2e}")
  assert rel < 1e-6
  assert int(cache.index) == 12 and cache.max_length == MAX_LEN
  assert whisper_decode.cache_bytes(cfg, 3, MAX_LEN) == sum(x.nbytes for x in jax.tree.leaves(cache))
  with pytest.raises(ValueError, match=r"cache full \(23 of 23 slots\)"):
    whisper_decode.step(params, cfg, jnp.array([1, 1, 1]), cache.replace(index=jnp.asarray(MAX_LEN)))


def _greedy(cfg, params, mel, prompt, n):
  logits, cache = prefill(params, cfg, mel, prompt, MAX_LEN)
  ids = []
  for _ in range(n):
    token = jnp.argmax(logits, axis=-1)
    ids.append(np.asarray(token))
    if len(ids) < n:
      logits, cache = step(params, cfg, token, cache)
  return np.stack(ids, axis=1)


@pytest.mark.parametrize("flag", ["hf-whisper", "openai-whisper"])
def test_greedy_ids_equal_generate(flag, model, mel):
  """The tiny config has no suppress/begin-suppress tokens, no forced ids, no language/timestamp logic:
  generate() is plain greedy (its output holds only the new tokens)."""
  ref, ckpts = model
  cfg, params = _load(ckpts[flag])
  ours = _greedy(cfg, params, mel, PROMPTS, 20)
  with torch.no_grad():
    theirs = ref.generate(torch.from_numpy(mel), decoder_input_ids=torch.from_numpy(PROMPTS), do_sample=False,
                          max_new_tokens=20).numpy()
  print(flag, ours.tolist())
  assert theirs.shape == (3, 20) and np.array_equal(ours, theirs)
  assert all(len(set(row)) >= 5 for row in ours.tolist())  # not a degenerate repetition


def test_each_row_of_a_batch_gives_its_single_clip_logits(model, mel):
  """Every clip is padded to the 30 s window and attends to all of it, so rows are independent; XLA's CPU
  matmuls block differently per batch size, hence rounding-level (not bitwise) differences."""
  cfg, params = _load(model[1]["hf-whisper"])
  batch, _ = _decode(cfg, params, mel, IDS[:, :6])
  singles = np.concatenate([_decode(cfg, params, mel[r:r + 1], IDS[r:r + 1, :6])[0] for r in range(3)])
  rel = _rel(batch, singles)
  print(f"batch of 3 vs single clips: max|d|/max|ref| = {rel:.2e}")
  assert rel < 1e-6


def test_take_reorders_rows_within_clips(model, mel):
  """Beam search: widen to 2 rows per clip, feed different tokens, swap the rows of each clip, step again;
  every row equals the teacher-forced logits of its own history."""
  cfg, params = _load(model[1]["hf-whisper"])
  _, cache = prefill(params, cfg, mel, PROMPTS, MAX_LEN)
  cache = cache.take(jnp.repeat(jnp.arange(3), 2))
  first = jnp.array([10, 11, 12, 13, 14, 15])
  _, cache = step(params, cfg, first, cache)
  swap = jnp.array([1, 0, 3, 2, 5, 4])
  cache = cache.take(swap)
  second = jnp.array([20, 21, 22, 23, 24, 25])
  logits, _ = step(params, cfg, second, cache)
  history = np.concatenate([np.repeat(PROMPTS, 2, axis=0), np.asarray(first[swap])[:, None],
                            np.asarray(second)[:, None]], axis=1)
  # Reference: one clip per row (no grouping of rows by clip), so a grouping bug cannot cancel out.
  expected = np.asarray(forward_logits(params, cfg, np.repeat(mel, 2, axis=0), history))[:, -1]
  assert _rel(logits, expected) < 1e-6
  with pytest.raises(ValueError, match="move rows between clips"):
    cache.take(jnp.array([2, 1, 0, 3, 4, 5]))


def test_bfloat16_compute(model, mel):
  cfg32, params = _load(model[1]["hf-whisper"])
  cfg = cfg32.replace(dtype="bfloat16")
  ours, cache = _decode(cfg, params, mel, IDS[:, :6])
  ref, _ = _decode(cfg32, params, mel, IDS[:, :6])
  assert ours.dtype == np.float32 and cache.self_k.dtype == cache.cross_k.dtype == jnp.bfloat16
  stats = verify.logit_stats(ours.reshape(-1, 96), ref.reshape(-1, 96))
  print("bf16 vs fp32:", stats)
  assert stats["kl_mean"] < 1e-3 and stats["top1"] >= 0.9


def test_bad_inputs_get_one_clear_error(model, mel):
  cfg, params = _load(model[1]["hf-whisper"])
  with pytest.raises(ValueError, match=r"mel must be \[N, 80, 3000\]"):
    whisper_decode.prefill(params, cfg, mel[:, :, :2000], PROMPTS, 8)
  with pytest.raises(ValueError, match=r"max_length 33 must lie in \[prompt length 3, 32\]"):
    whisper_decode.prefill(params, cfg, mel, PROMPTS, 33)
  with pytest.raises(ValueError, match="multiple of the 3 clips"):
    whisper_decode.prefill(params, cfg, mel, PROMPTS[:2], 8)
  with pytest.raises(ValueError, match=r"token ids must lie in \[0, 96\)"):
    whisper_decode.forward_logits(params, cfg, mel, PROMPTS + 90)
  with pytest.raises(ValueError, match="text decoder"):
    whisper_decode.prefill(params, cfg.replace(text_decoder=None), mel, PROMPTS, 8)


def test_preset_sizes_match_transformers_whisper_tiny():
  """whisper-tiny: openai dims (384 wide, 6 heads, 4+4 layers, 51865 ids, 448 positions); the count
  excludes the encoder's fixed sinusoids, counts the tied output projection once."""
  cfg = get_config("whisper-tiny")
  ref = transformers.WhisperForConditionalGeneration(transformers.WhisperConfig(
      vocab_size=51865, num_mel_bins=80, d_model=384, encoder_layers=4, encoder_attention_heads=6,
      decoder_layers=4, decoder_attention_heads=6, encoder_ffn_dim=1536, decoder_ffn_dim=1536))
  n_ref = sum(p.numel() for p in ref.parameters()) - ref.model.encoder.embed_positions.weight.numel()
  assert count_params(cfg) == n_ref == 37_184_640
  assert dataclasses.astuple(get_config("whisper-large-v3").text_decoder) == (51866, 448, 1280, 20, 32, 5120, 1e-5)
