"""The generation engine against its references, on tiny random models:
greedy and beam-search ids equal transformers' `generate` (Qwen2-Audio, batch of 3 clips of different
lengths); Qwen-Audio v1 greedy ids equal a float64 step-by-step decode by full forwards with the
prefill's dynamic-NTK alpha (the prompt crosses seq_length and the decode crosses the next alpha
boundary); stop ids / stop sequences / the per-second cap / the loop guard end rows with the right
reason; sampling is reproducible per seed and top-k=1 sampling is greedy."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conversion import convert, tiny_models  # noqa: E402
from qwen_audio_jax import checkpoint_io  # noqa: E402
from qwen_audio_jax.audio import lengths as L  # noqa: E402
from qwen_audio_jax.audio.mel import log_mel_spectrogram, pad_or_trim  # noqa: E402
from qwen_audio_jax.infer import DecodeSettings, Generator, Prompt  # noqa: E402
from qwen_audio_jax.model import get_config  # noqa: E402
from test_model_numpy_ref import np_alpha, np_decode, np_encode_clip, random_params  # noqa: E402

EOS = 507  # a token the tiny Qwen2-Audio emits early in one row and late or never in others
SECONDS = (1.3, 2.7, 0.8)


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
  """(transformers model, our Generator, prompts, HF inputs) for a batch of 3 clips."""
  root = tmp_path_factory.mktemp("q2a")
  model = tiny_models.hf_qwen2_audio(str(root / "hf"), std=0.3)  # larger weights: varied greedy outputs
  convert.convert("hf-qwen2-audio", str(root / "hf"), str(root / "ckpt"), log=lambda *a: None)
  cfg, params, _ = checkpoint_io.load_model_checkpoint(str(root / "ckpt"))
  rng = np.random.default_rng(0)
  prompts, rows, feats, fmask = [], [], [], []
  pad = cfg.audio_pad_id
  for i, seconds in enumerate(SECONDS):
    wave = (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
    mel_len = L.mel_frames(wave.size, "qwen2-audio")
    t = L.encoder_frames(mel_len)
    ids = list(rng.integers(0, 400, 3)) + [pad] * L.pooled_frames(t) + list(rng.integers(0, 400, 2 + i))
    prompts.append(Prompt(ids=np.asarray(ids, np.int32), waveforms=[wave], encoder_frames=[t], audio_seconds=seconds))
    rows.append(ids)
    feats.append(np.asarray(log_mel_spectrogram(pad_or_trim(wave, L.N_SAMPLES), n_mels=128)))
    fmask.append((np.arange(L.N_FRAMES) < mel_len).astype(np.int64))
  width = max(map(len, rows))
  ids = np.zeros((3, width), np.int64)
  mask = np.zeros((3, width), np.int64)
  for r, row in enumerate(rows):  # left padded, as our engine pads
    ids[r, width - len(row):], mask[r, width - len(row):] = row, 1
  hf_inputs = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                   input_features=torch.tensor(np.stack(feats)), feature_attention_mask=torch.tensor(np.stack(fmask)))
  gen = Generator(cfg.replace(matmul_precision="highest"), params, max_batch=4)
  return model, gen, prompts, hf_inputs


def _hf_rows(model, hf_inputs, n_new, **kw):
  with torch.no_grad():
    out = model.generate(**hf_inputs, do_sample=False, max_new_tokens=n_new, eos_token_id=EOS, pad_token_id=0, **kw)
  out = out[:, hf_inputs["input_ids"].shape[1]:].numpy()
  rows = []
  for row in out:
    row = list(map(int, row))
    rows.append(row[:row.index(EOS) + 1] if EOS in row else row)
  return rows


def test_qwen2_audio_greedy_ids_equal_transformers(qwen2):
  model, gen, prompts, hf_inputs = qwen2
  expected = _hf_rows(model, hf_inputs, 32)
  got = gen.generate(prompts, DecodeSettings(max_new_tokens=32, eos_ids=(EOS,)))
  assert [o.ids for o in got] == expected
  assert [o.reason for o in got] == ["stop" if EOS in e else "length" for e in expected]
  assert any(len(e) < 32 for e in expected) and any(len(e) == 32 for e in expected)  # both cases seen


@pytest.mark.parametrize("kw", [dict(), dict(length_penalty=0.5, early_stopping=True)], ids=["default", "lp-early"])
def test_qwen2_audio_beam_ids_equal_transformers(qwen2, kw):
  model, gen, prompts, hf_inputs = qwen2
  expected = _hf_rows(model, hf_inputs, 32, num_beams=4, **kw)
  got = gen.generate(prompts, DecodeSettings(strategy="beam", num_beams=4, max_new_tokens=32, eos_ids=(EOS,), **kw))
  assert [o.ids for o in got] == expected


def test_generation_is_batch_invariant(qwen2):
  _, gen, prompts, _ = qwen2
  for settings in (DecodeSettings(max_new_tokens=32, eos_ids=(EOS,)),
                   DecodeSettings(strategy="beam", num_beams=3, max_new_tokens=16, eos_ids=(EOS,)),
                   DecodeSettings(strategy="sample", temperature=1.5, seed=3, max_new_tokens=16, eos_ids=(EOS,))):
    batched = [o.ids for o in gen.generate(prompts, settings)]
    assert batched == [gen.generate([p], settings)[0].ids for p in prompts], settings.strategy


def test_stop_sequences_end_rows(qwen2):
  _, gen, prompts, _ = qwen2
  free = gen.generate(prompts[:1], DecodeSettings(max_new_tokens=24, eos_ids=(511,)))[0].ids
  start = next(k for k in range(4, 20) if (free[k], free[k + 1]) not in zip(free[:k], free[1:k + 1]))
  stop = (free[start], free[start + 1])
  out = gen.generate(prompts[:1], DecodeSettings(max_new_tokens=24, eos_ids=(511,), stop_sequences=(stop,)))[0]
  assert out.ids == free[:start + 2] and out.reason == "stop"


def test_sampling_reproducible_per_seed_and_top_k_1_is_greedy(qwen2):
  _, gen, prompts, _ = qwen2
  sample = lambda seed, **kw: [o.ids for o in gen.generate(prompts, DecodeSettings(
      strategy="sample", temperature=2.0, seed=seed, max_new_tokens=16, eos_ids=(EOS,), **kw))]
  assert sample(1) == sample(1)
  assert sample(1) != sample(2)
  greedy = [o.ids for o in gen.generate(prompts, DecodeSettings(max_new_tokens=16, eos_ids=(EOS,)))]
  assert sample(5, top_k=1) == greedy
  assert sample(6, top_p=1e-6) == greedy


# ------------------------------------------------------------------ forced repetition: guards and stops
@pytest.fixture(scope="module")
def repeater(qwen2):
  """The same model with a zero final-norm scale: every logit is 0, so argmax always picks token 0."""
  _, gen, prompts, _ = qwen2
  params = jax.tree.map(lambda x: x, gen.params)
  params["decoder"]["final_norm"]["scale"] = jnp.zeros_like(params["decoder"]["final_norm"]["scale"])
  return Generator(gen.cfg, params, max_batch=4), prompts


@pytest.mark.parametrize("settings,n,reason", [
    (dict(loop_guard_tokens=16, loop_guard_max_period=4), 16, "loop"),
    (dict(max_new_tokens_per_second=5.0, min_new_tokens_cap=2), None, "audio_cap"),
    (dict(stop_sequences=((0, 0, 0),)), 3, "stop"),
    (dict(eos_ids=(0,)), 1, "stop"),
    (dict(), 40, "length"),
])
def test_guards_and_stops_fire_on_a_repeating_model(repeater, settings, n, reason):
  gen, prompts = repeater
  out = gen.generate(prompts, DecodeSettings(**{"max_new_tokens": 40, "eos_ids": (511,), **settings}))
  for o, seconds in zip(out, SECONDS):
    expected = n if n is not None else max(2, int(np.ceil(5.0 * seconds)))
    assert (o.reason, o.ids) == (reason, [0] * expected)


# ------------------------------------------------------------------ Qwen-Audio v1: float64 step-by-step reference
PAD, START, END = 500, 501, 502


def test_qwen_audio_v1_greedy_equals_full_forward_decode_with_prefill_alpha():
  base = get_config("tiny-qwen-audio")
  cfg = base.replace(encoder=dataclasses.replace(base.encoder, n_ctx=1500),
                     decoder=dataclasses.replace(base.decoder, vocab_size=512, seq_length=16),
                     audio_pad_id=PAD, audio_start_id=START, audio_end_id=END, pad_id=0,
                     matmul_precision="highest")
  params = random_params(cfg, 7, scale=0.3)
  rng = np.random.default_rng(1)
  wave = (0.1 * rng.standard_normal(int(1.1 * 16000))).astype(np.float32)
  t = L.encoder_frames(L.mel_frames(wave.size))
  n_audio = L.pooled_frames(t)
  text = list(rng.integers(0, 400, 8))
  ids = [START] + [PAD] * n_audio + [END] + text  # 37 tokens: alpha 7 (> 2 × 16), decode crosses 64
  n_new = 32
  got = Generator(cfg, params).generate([Prompt(ids=np.asarray(ids, np.int32), waveforms=[wave],
                                                encoder_frames=[t], audio_seconds=1.1)],
                                        DecodeSettings(max_new_tokens=n_new, eos_ids=(511,)))[0].ids
  mel = np.asarray(log_mel_spectrogram(pad_or_trim(wave, L.N_SAMPLES)))
  table = np.asarray(params["decoder"]["embed"]["embedding"], np.float64)
  bos_eos = np.asarray(params["audio_bos_eos"]["embedding"], np.float64)
  h = table[ids]
  h[0:n_audio + 2] = np.concatenate([bos_eos[:1], np_encode_clip(params, cfg, mel, t), bos_eos[1:]])
  alpha = np_alpha(len(ids), 16)
  assert alpha == 7 and np_alpha(len(ids) + n_new, 16) == 15  # the decode crosses an alpha boundary
  expected = []
  for _ in range(n_new):
    token = int(np.argmax(np_decode(params, cfg, h, alpha=alpha)[-1]))
    expected.append(token)
    h = np.concatenate([h, table[token][None]])
  assert got == expected
