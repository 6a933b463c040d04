"""The attention choice inside the model: every implementation that runs on CPU gives the reference's
logits, cache decoding and gradients (tiny random Qwen-Audio, several key blocks per sequence)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen_audio_jax.audio import lengths as L
from qwen_audio_jax.model import Model, abstract_params, get_config, init_cache, loss_fn

PAD, START, END = 500, 501, 502


def tiny(**kw):
  base = get_config("tiny-qwen-audio")
  return base.replace(encoder=dataclasses.replace(base.encoder, n_ctx=100),
                      decoder=dataclasses.replace(base.decoder, vocab_size=512, seq_length=16, n_kv_heads=2),
                      audio_pad_id=PAD, audio_start_id=START, audio_end_id=END, attention_chunk=8, **kw)


def random_params(cfg, seed=0, scale=0.2):
  rng = np.random.default_rng(seed)
  def leaf(path, x):
    name = jax.tree_util.keystr(path)
    base, std = (1.0, 0.3) if "scale" in name else (0.0, 1.0 if "embed_positions" in name else scale)
    return (base + std * rng.normal(size=x.shape)).astype(np.float32)
  return jax.tree_util.tree_map_with_path(leaf, abstract_params(cfg))


@pytest.fixture(scope="module")
def setup():
  """Two left-padded rows: one with a 57-frame clip (29 encoder frames, of a 200-frame window) and one
  text-only; true lengths 25 and 8, so Qwen v1's NTK and logn (seq_length 16) are active."""
  cfg = tiny()
  rng = np.random.default_rng(1)
  t = int(L.encoder_frames(57))
  rows = [list(rng.integers(0, 400, 6)) + [START] + [PAD] * int(L.pooled_frames(t)) + [END] + [7, 8, 9],
          list(rng.integers(0, 400, 8))]
  seq = max(map(len, rows)) + 2
  ids = np.array([[0] * (seq - len(r)) + r for r in rows])
  mask = np.array([[0] * (seq - len(r)) + [1] * len(r) for r in rows])
  mel = rng.normal(size=(1, 80, 200)).astype(np.float32)
  return cfg, random_params(cfg), ids, mask, mel, np.array([t])


def logits_of(cfg, params, ids, mask, mel, t):
  return np.asarray(jax.jit(Model(cfg).apply)({"params": params}, ids, mask, mel, t))


@pytest.mark.parametrize("impl", ["chunked", "cudnn"])
def test_model_logits_equal_reference(setup, impl):
  """"cudnn" falls back to chunked on CPU (test_attention.py checks the choice and its log)."""
  cfg, params, ids, mask, mel, t = setup
  want = logits_of(cfg.replace(attention="xla"), params, ids, mask, mel, t)
  got = logits_of(cfg.replace(attention=impl), params, ids, mask, mel, t)
  err = np.max(np.abs(got - want)[mask == 1])
  print(f"{impl}: max|d| logits on real tokens = {err:.1e} (|logits| <= {np.abs(want).max():.1f})")
  assert err <= 2e-5


def test_prefill_then_decode_chunked_equals_reference_full_forward(setup):
  cfg, params, ids, mask, mel, t = setup
  steps = 4
  new = np.random.default_rng(2).integers(0, 400, size=(2, steps))
  full = logits_of(cfg.replace(attention="xla"), params, np.concatenate([ids, new], 1),
                   np.concatenate([mask, np.ones_like(new)], 1), mel, t)
  model = Model(cfg.replace(attention="chunked"))
  prefill = jax.jit(lambda p, i, m, a, l, c: model.apply({"params": p}, i, m, a, l, cache=c))
  step = jax.jit(lambda p, i, c: model.apply({"params": p}, i, jnp.ones_like(i), cache=c))
  logits, cache = prefill(params, ids, mask, mel, t, init_cache(cfg, 2, ids.shape[1] + steps + 3))
  outs = [logits[:, -1]]
  for k in range(steps):
    logits, cache = step(params, new[:, k:k + 1], cache)
    outs.append(logits[:, 0])
  err = np.max(np.abs(np.stack(outs, 1) - full[:, ids.shape[1] - 1:]))
  print(f"chunked prefill + decode vs reference full forward: max|d| = {err:.1e}; alpha {np.asarray(cache.ntk_alpha)}")
  assert np.asarray(cache.ntk_alpha).tolist() == [3.0, 1.0]  # NTK (and logn) active in row 0
  assert err <= 2e-5


def test_training_gradients_equal_reference(setup):
  cfg, params, ids, mask, mel, t = setup

  def loss(p, c):
    logits = Model(c).apply({"params": p}, ids, mask, mel, t, train=True)
    return loss_fn(logits[:, :-1], ids[:, 1:], mask[:, 1:])[0]

  grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  base_loss, base = grad(params, cfg.replace(attention="xla"))
  for c in (cfg.replace(attention="chunked"), cfg.replace(attention="chunked", remat_policy="minimal")):
    l, g = grad(params, c)
    diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))), g, base)
    worst = max(jax.tree.leaves(diffs))
    print(f"{c.attention}/{c.remat_policy}: |dloss| {abs(float(l) - float(base_loss)):.1e}, max|dgrad| {worst:.1e}")
    assert abs(float(l) - float(base_loss)) <= 1e-6 and worst <= 3e-6
