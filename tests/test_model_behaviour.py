"""Model behaviour on tiny random configs: batch invariance, KV-cache decoding, bf16 compute, remat,
the placeholder validator and the loss."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen_audio_jax.audio import lengths as L
from qwen_audio_jax.model.layers import REMAT_POLICIES
from qwen_audio_jax.model import (AudioPlaceholderError, Model, abstract_params, check_audio_placeholders, forward,
                                  get_config, init_cache, loss_fn)

PAD, START, END = 500, 501, 502


def random_params(cfg, seed, scale=0.08):
  rng = np.random.default_rng(seed)
  def leaf(path, x):
    name = jax.tree_util.keystr(path)
    base, std = (1.0, 0.3) if "scale" in name else (0.0, 1.0 if "embed_positions" in name else scale)
    return (base + std * rng.normal(size=x.shape)).astype(np.float32)
  return jax.tree_util.tree_map_with_path(leaf, abstract_params(cfg))


def tiny(name, **decoder):
  base = get_config(name)
  encoder = None if base.encoder is None else dataclasses.replace(base.encoder, n_ctx=100)
  return base.replace(encoder=encoder,
                      decoder=dataclasses.replace(base.decoder, vocab_size=512, **decoder),
                      audio_pad_id=PAD, audio_start_id=START, audio_end_id=END)


def make_samples(cfg, rng, mel_frames_per_sample, text_lengths):
  """Per sample: (ids list, [mel [n_mels, 200]], [T]). Spans <start> + n placeholders + <end> between text."""
  samples = []
  for mel_frames, n_text in zip(mel_frames_per_sample, text_lengths):
    ids, mels, ts = list(rng.integers(0, 400, size=n_text)), [], []
    for f in mel_frames:
      t = int(L.encoder_frames(f))
      ids += [START] + [PAD] * int(L.pooled_frames(t)) + [END] + list(rng.integers(0, 400, size=3))
      mels.append(rng.normal(size=(cfg.encoder.n_mels, 200)).astype(np.float32))
      ts.append(t)
    samples.append((ids, mels, ts))
  return samples


def batch_of(samples, extra_pad=0):
  seq = max(len(s[0]) for s in samples) + extra_pad
  ids = np.array([[0] * (seq - len(s[0])) + s[0] for s in samples])
  mask = np.array([[0] * (seq - len(s[0])) + [1] * len(s[0]) for s in samples])
  mel = np.stack([m for s in samples for m in s[1]])
  return ids, mask, mel, np.array([t for s in samples for t in s[2]])


@pytest.fixture(scope="module", params=["tiny-qwen-audio", "tiny-qwen2-audio"])
def model(request):
  """cfg, params, `run` (the public jitted `forward`), two samples (one long clip + short text; two clips +
  longer text), their left-padded batch and its logits (computed once; tests reuse the shapes)."""
  cfg = tiny(request.param)
  params = random_params(cfg, seed=3)
  run = lambda *inputs: np.asarray(forward(params, cfg, *inputs))  # the public, jitted entry point
  samples = make_samples(cfg, np.random.default_rng(0), [[200], [57, 131]], [2, 9])
  batch = batch_of(samples, extra_pad=3)
  return cfg, params, run, samples, batch, run(*batch)


def test_batched_logits_equal_unbatched(model):
  cfg, params, run, samples, (ids, mask, mel, t), batched = model
  err = 0.0
  for b, (s_ids, s_mels, s_t) in enumerate(samples):
    s_mel = np.stack(s_mels)
    if cfg.encoder.padding == "crop":  # the reference crops a single clip to 2T: any window >= 2T is equivalent
      s_mel = s_mel[:, :, :2 * max(s_t)]
    alone = run(np.array([s_ids]), np.ones((1, len(s_ids)), np.int32), s_mel, np.array(s_t))[0]
    err = max(err, np.max(np.abs(batched[b][mask[b] == 1] - alone)))
  print(f"{cfg.family}: batched vs unbatched max|d| = {err:.2e}")
  assert err <= 1e-5


def test_splice_uses_audio(model):
  """Changing one clip changes only the rows holding it (guards against a no-op splice)."""
  cfg, params, run, _, (ids, mask, mel, t), base = model
  mel2 = mel.copy()
  mel2[2, :, :10] += 1.0  # the second clip of sample 1
  moved = run(ids, mask, mel2, t)
  assert np.max(np.abs(moved[0] - base[0])) == 0.0
  assert np.max(np.abs(moved[1] - base[1])) > 1e-3


def test_bf16_compute_close_to_fp32(model):
  cfg, params, _, _, (ids, mask, mel, t), ref = model
  bf16 = np.asarray(forward(params, cfg.replace(dtype="bfloat16"), ids, mask, mel, t))
  assert bf16.dtype == np.float32
  logp, logq = jax.nn.log_softmax(ref), jax.nn.log_softmax(bf16)
  kl = np.asarray(jnp.sum(jnp.exp(logp) * (logp - logq), axis=-1))[mask == 1]
  print(f"{cfg.family}: bf16 vs fp32 mean KL = {kl.mean():.2e}, max {kl.max():.2e}")
  assert 0.0 < kl.mean() <= 0.015


def test_prefill_then_decode_equals_full_forward():
  cfg = tiny("tiny-qwen-audio", seq_length=16, n_kv_heads=2)  # v1: dynamic NTK + logn active past 16 tokens
  params = random_params(cfg, seed=4, scale=0.2)
  rng = np.random.default_rng(4)
  samples = make_samples(cfg, rng, [[57], []], [6, 8])  # true lengths 25 -> 29 (alpha 3) and 8 -> 12 (alpha 1)
  ids, mask, mel, t = batch_of(samples)
  steps = 4
  new = rng.integers(0, 400, size=(2, steps))
  model = Model(cfg)
  full = jax.jit(model.apply)({"params": params}, np.concatenate([ids, new], 1),
                              np.concatenate([mask, np.ones_like(new)], 1), mel, t)
  prefill = jax.jit(lambda p, i, m, a, l, c: model.apply({"params": p}, i, m, a, l, cache=c))
  step = jax.jit(lambda p, i, c: model.apply({"params": p}, i, jnp.ones_like(i), cache=c))
  logits, cache = prefill(params, ids, mask, mel, t, init_cache(cfg, 2, ids.shape[1] + steps + 2))
  outs = [logits[:, -1]]
  for k in range(steps):
    logits, cache = step(params, new[:, k:k + 1], cache)
    outs.append(logits[:, 0])
  decoded = np.stack(outs, 1)
  want = np.asarray(full)[:, ids.shape[1] - 1:]
  err = np.max(np.abs(decoded - want))
  print(f"prefill+decode vs full forward max|d| = {err:.2e}; alpha {np.asarray(cache.ntk_alpha)}")
  assert np.asarray(cache.ntk_alpha).tolist() == [3.0, 1.0]
  assert int(cache.index) == ids.shape[1] + steps
  assert err <= 1e-5
  with pytest.raises(ValueError, match="KVCache full"):
    forward(params, cfg, ids, mask, mel, t, cache=init_cache(cfg, 2, ids.shape[1] - 1))


def test_remat_policies_same_loss_and_grads():
  cfg = tiny("tiny-qwen")
  params = random_params(cfg, seed=5)
  ids = np.random.default_rng(5).integers(0, 512, size=(2, 12))
  mask = np.ones_like(ids)

  def loss(p, c):
    logits = Model(c).apply({"params": p}, ids, mask, train=True)
    return loss_fn(logits[:, :-1], ids[:, 1:], mask[:, 1:])[0]

  policies = ("none", "full", "dots", *REMAT_POLICIES)
  results = {pol: jax.jit(jax.value_and_grad(loss), static_argnums=1)(params, cfg.replace(remat_policy=pol))
             for pol in policies}
  base_loss, base_grads = results["none"]
  for pol in policies[1:]:
    l, g = results[pol]
    assert abs(float(l) - float(base_loss)) <= 1e-6
    diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))), g, base_grads)
    assert max(jax.tree.leaves(diffs)) <= 1e-6, pol
  with pytest.raises(ValueError, match="remat_policy must be one of"):
    Model(cfg.replace(remat_policy="save_everything")).apply({"params": params}, ids, mask)


def test_encoder_positions_get_no_gradient():
  cfg = get_config("tiny-whisper").replace(encoder=dataclasses.replace(get_config("tiny-whisper").encoder, n_ctx=20))
  params = random_params(cfg, seed=6)
  mel = np.random.default_rng(6).normal(size=(1, 80, 40)).astype(np.float32)
  encode = lambda p: Model(cfg).apply({"params": p}, mel, method=Model.encode_audio)
  grads = jax.jit(jax.grad(lambda p: jnp.sum(encode(p) ** 2)))(params)
  assert float(np.abs(np.asarray(grads["audio_encoder"]["embed_positions"])).max()) == 0.0
  assert float(np.abs(np.asarray(grads["audio_encoder"]["conv1"]["kernel"])).max()) > 0.0


def test_placeholder_validator_messages():
  cfg = tiny("tiny-qwen-audio")
  t = [29]  # 14 audio features
  good = np.array([[7, START] + [PAD] * 14 + [END, 8]])
  check_audio_placeholders(good, t, cfg)
  with pytest.raises(AudioPlaceholderError, match=r"1 audios with 14 features .* 13 placeholders"):
    check_audio_placeholders(np.array([[7, START] + [PAD] * 13 + [END, 8]]), t, cfg)
  with pytest.raises(AudioPlaceholderError, match=r"one start and one end tag per audio.* 0 end tags"):
    check_audio_placeholders(np.array([[7, START] + [PAD] * 14 + [8, 8]]), t, cfg)
  with pytest.raises(AudioPlaceholderError, match=r"per span \[13, 1\]"):
    check_audio_placeholders(np.array([[START] + [PAD] * 13 + [END, START, PAD, END]]), [29, 1], cfg)
  with pytest.raises(AudioPlaceholderError, match=r"\[129\] must lie in \[0, 100\]"):
    check_audio_placeholders(good, [129], cfg, mel_frames=200)
  with pytest.raises(AudioPlaceholderError, match="0 audios"):  # placeholders but no audio
    forward(None, cfg, good)
  params = random_params(cfg, seed=6)
  with pytest.raises(AudioPlaceholderError):  # the eager model call checks too
    Model(cfg).apply({"params": params}, good[:, :-3], None, np.zeros((1, 80, 200), np.float32), np.array(t))
  q2 = tiny("tiny-qwen2-audio")
  check_audio_placeholders(np.array([[7] + [PAD] * 14 + [8]]), t, q2)  # Qwen2-Audio: tags optional


def test_loss_fn_masked_mean():
  rng = np.random.default_rng(7)
  logits = rng.normal(size=(2, 5, 11)).astype(np.float32)
  targets = rng.integers(0, 11, size=(2, 5))
  mask = np.array([[0, 1, 1, 0, 1], [1, 1, 0, 0, 0]])
  loss, count = loss_fn(jnp.asarray(logits, jnp.bfloat16), targets, mask)
  logp = np.asarray(jax.nn.log_softmax(np.asarray(jnp.asarray(logits, jnp.bfloat16), np.float32)))
  nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
  assert int(count) == 5
  assert abs(float(loss) - nll[mask == 1].mean()) <= 1e-6
  assert float(loss_fn(logits, targets, np.zeros_like(mask))[0]) == 0.0


def test_decoder_output_modes_agree():
  """"last_logits" is the last column of "logits"; "hidden" + project gives the same logits."""
  cfg = tiny("tiny-qwen")
  params = random_params(cfg, 11)
  ids = jnp.asarray(np.random.default_rng(0).integers(0, 400, size=(2, 7)), jnp.int32)
  mask = jnp.asarray([[0, 0, 1, 1, 1, 1, 1], [1] * 7], jnp.int32)
  model = Model(cfg)
  full = model.apply({"params": params}, ids, mask)
  last = model.apply({"params": params}, ids, mask, output="last_logits")
  hidden = model.apply({"params": params}, ids, mask, output="hidden")
  projected = model.apply({"params": params}, hidden, method=Model.project)
  assert last.shape == (2, 512) and hidden.shape == (2, 7, cfg.decoder.d_model)
  np.testing.assert_allclose(last, full[:, -1], rtol=0, atol=1e-6)
  np.testing.assert_allclose(projected, full, rtol=0, atol=1e-6)
  with pytest.raises(ValueError, match="output must be one of"):
    model.apply({"params": params}, ids, mask, output="probs")
