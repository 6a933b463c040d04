"""The training loss blocked through the lm_head (model.chunked_loss) and the padded vocabulary.

* blocked == `loss_fn` on the full logits (loss, count and every parameter gradient, fp32), for
  vocabulary blocks (exact splits, and a prime vocabulary that needs padded columns) and optional
  sequence blocks that divide the sequence, do not divide it, are 1, or cover it;
* padded vocabulary rows (junk values in them) change no returned logit, no loss and no gradient of a
  real row, and get no gradient themselves;
* compiled memory of loss + gradients: the chunked loss keeps far less than one [B, S, V] logits array.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen_audio_jax.model import Model, abstract_params, chunked_loss, get_config, loss_fn
from qwen_audio_jax.model.loss import vocab_blocks

V, S, B = 500, 21, 3


def tiny(vocab=V, pad_to=1, d_model=None):
  base = get_config("tiny-qwen")
  dec = dataclasses.replace(base.decoder, vocab_size=vocab, vocab_pad_to=pad_to, **(
      {} if d_model is None else dict(d_model=d_model, n_layers=1, mlp_dim=2 * d_model)))
  return base.replace(decoder=dec)


def random_params(cfg, seed, scale=0.1):
  rng = np.random.default_rng(seed)
  def leaf(path, x):
    base = 1.0 if "scale" in jax.tree_util.keystr(path) else 0.0
    return (base + scale * rng.normal(size=x.shape)).astype(np.float32)
  return jax.tree_util.tree_map_with_path(leaf, abstract_params(cfg))


def data(seed=0, vocab=V):
  r = np.random.default_rng(seed)
  ids = r.integers(0, vocab, (B, S)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[0, :4] = 0  # left padding
  loss_mask = (r.random((B, S)) < 0.6).astype(np.int32)
  loss_mask[0, :4] = 0
  targets = np.roll(ids, -1, axis=1)
  return ids, mask, targets, loss_mask


def full_loss(cfg, params, ids, mask, targets, loss_mask):
  logits = Model(cfg).apply({"params": params}, ids, mask, train=True)
  return loss_fn(logits, targets, loss_mask)


def chunk_loss(cfg, params, ids, mask, targets, loss_mask, vocab_block, chunk=0):
  cfg = cfg.replace(loss_vocab_block=vocab_block, loss_chunk=chunk)
  hidden = Model(cfg).apply({"params": params}, ids, mask, train=True, output="hidden")
  return chunked_loss(hidden, params["decoder"]["lm_head"], targets, loss_mask, cfg)


def max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in
             zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.fixture(scope="module")
def reference():
  cfg = tiny()
  params = random_params(cfg, 0)
  batch = data()
  (loss, n), grads = jax.jit(jax.value_and_grad(lambda p: full_loss(cfg, p, *batch), has_aux=True))(params)
  return cfg, params, batch, float(loss), float(n), grads


@pytest.mark.parametrize("vocab_block,chunk", [(0, 0), (64, 0), (7, 0), (64, 1), (64, 5), (64, 7), (500, 16),
                                               (64, 21)])
def test_chunked_loss_equals_full_logits_loss(reference, vocab_block, chunk):
  cfg, params, batch, loss, n, grads = reference
  (c_loss, c_n), c_grads = jax.jit(jax.value_and_grad(
      lambda p: chunk_loss(cfg, p, *batch, vocab_block, chunk), has_aux=True))(params)
  assert float(c_n) == n == float(batch[3].sum())
  assert abs(float(c_loss) - loss) <= 1e-6 * loss
  assert max_diff(c_grads, grads) <= 6e-7  # measured up to 2.2e-7


def test_vocab_blocks_split_exactly_or_pad():
  assert vocab_blocks(500, 1, 64) == (10, 50)  # exact: no copy of the kernel
  assert vocab_blocks(156672, 1024, 8192) == (17, 9216)  # the 7B configs' padded vocabulary
  assert vocab_blocks(155947, 1, 8192) == (11, 14177)
  assert vocab_blocks(509, 1, 64) == (8, 64)  # prime: 3 zero columns appended
  assert vocab_blocks(500, 1, 0) == vocab_blocks(500, 1, 512) == (1, 500)


def test_chunked_loss_with_padded_kernel_columns():
  cfg = tiny(vocab=509)
  params = random_params(cfg, 3)
  batch = data(seed=3, vocab=509)
  (loss, _), grads = jax.jit(jax.value_and_grad(lambda p: full_loss(cfg, p, *batch), has_aux=True))(params)
  blocked = lambda p: chunk_loss(cfg, p, *batch, 64, 5)
  (c_loss, _), c_grads = jax.jit(jax.value_and_grad(blocked, has_aux=True))(params)
  assert abs(float(c_loss) - float(loss)) <= 1e-6 * float(loss)
  assert max_diff(c_grads, grads) <= 6e-7  # measured up to 2.2e-7


def test_chunked_loss_ignores_targets_outside_the_mask(reference):
  cfg, params, (ids, mask, targets, loss_mask), loss, _, _ = reference
  scrambled = np.where(loss_mask == 1, targets, (targets + 17) % V)
  assert float(chunk_loss(cfg, params, ids, mask, scrambled, loss_mask, 64, 5)[0]) == pytest.approx(loss, rel=1e-6)
  nll = lambda lm: float(chunk_loss(cfg, params, ids, mask, targets, lm, 64, 5)[0])
  assert abs(nll(np.ones_like(loss_mask)) - loss) > 1e-3  # the mask matters


def _pad_rows(params, cfg_padded, seed):
  """Unpadded params with junk (not zeros) in the padded vocabulary rows / columns."""
  rng = np.random.default_rng(seed)
  out = jax.tree_util.tree_map(np.asarray, params)
  dec = dict(out["decoder"])
  vp = cfg_padded.decoder.padded_vocab
  emb, head = dec["embed"]["embedding"], dec["lm_head"]["kernel"]
  dec["embed"] = {"embedding": np.concatenate([emb, 5 * rng.standard_normal((vp - emb.shape[0], emb.shape[1]))
                                               .astype(np.float32)])}
  dec["lm_head"] = {"kernel": np.concatenate([head, 5 * rng.standard_normal((head.shape[0], vp - head.shape[1]))
                                              .astype(np.float32)], axis=1)}
  out["decoder"] = dec
  return out


def test_padded_vocabulary_changes_no_output_loss_or_gradient(reference):
  cfg, params, batch, loss, n, grads = reference
  cfg_p = tiny(pad_to=128)
  assert cfg_p.decoder.padded_vocab == 512
  params_p = _pad_rows(params, cfg_p, 1)
  ids, mask = batch[:2]
  model, model_p = Model(cfg), Model(cfg_p)
  logits = model.apply({"params": params}, ids, mask)
  logits_p = model_p.apply({"params": params_p}, ids, mask)
  last_p = model_p.apply({"params": params_p}, ids, mask, output="last_logits")
  assert logits_p.shape == (B, S, V) and last_p.shape == (B, V)  # no padded id can ever be sampled
  # measured up to 1.19e-6 (one fp32 ulp at |logit| ~ 10; the padded lm_head changes XLA's blocking)
  assert max_diff(logits_p, logits) <= 3e-6 and max_diff(last_p, logits[:, -1]) <= 3e-6
  blocked = lambda p: chunk_loss(cfg_p, p, *batch, 128, 4)
  (p_loss, p_n), p_grads = jax.jit(jax.value_and_grad(blocked, has_aux=True))(params_p)
  assert float(p_n) == n and abs(float(p_loss) - loss) <= 1e-6 * loss
  g, gp = p_grads["decoder"], grads["decoder"]
  assert max_diff(g["embed"]["embedding"][:V], gp["embed"]["embedding"]) <= 6e-7  # measured up to 2.2e-7
  assert max_diff(g["lm_head"]["kernel"][:, :V], gp["lm_head"]["kernel"]) <= 6e-7  # measured up to 2.2e-7
  assert float(np.abs(g["embed"]["embedding"][V:]).max()) == 0.0
  assert float(np.abs(g["lm_head"]["kernel"][:, V:]).max()) == 0.0
  rest = lambda t: {k: v for k, v in t.items() if k not in ("embed", "lm_head")}
  assert max_diff(rest(g), rest(gp)) <= 6e-7  # measured up to 2.2e-7


def test_chunked_loss_applies_an_lm_head_lora_adapter(reference):
  """The blocked loss adds (h A) B per block (B's columns strided like the kernel's) exactly as the
  model's lm_head does with the "lora" collection: same loss, same adapter gradients."""
  cfg, params, batch, _, _, _ = reference
  cfg_p = tiny(pad_to=128)
  params_p = _pad_rows(params, cfg_p, 4)
  r = np.random.default_rng(4)
  ad = {"lora_a": 0.3 * r.standard_normal((64, 4)).astype(np.float32),
        "lora_b": 0.3 * r.standard_normal((4, 512)).astype(np.float32)}
  ids, mask, targets, loss_mask = batch

  def full(lo):
    logits = Model(cfg_p).apply({"params": params_p, "lora": {"decoder": {"lm_head": lo}}}, ids, mask, train=True)
    return loss_fn(logits, targets, loss_mask)[0]

  def blocked(lo):
    c = cfg_p.replace(loss_vocab_block=128, loss_chunk=8)
    hidden = Model(c).apply({"params": params_p}, ids, mask, train=True, output="hidden")
    return chunked_loss(hidden, dict(params_p["decoder"]["lm_head"], **lo), targets, loss_mask, c)[0]

  (l_full, g_full), (l_blk, g_blk) = (jax.jit(jax.value_and_grad(f))(ad) for f in (full, blocked))
  without = float(full({"lora_a": ad["lora_a"], "lora_b": 0 * ad["lora_b"]}))
  assert abs(float(l_full) - without) > 1e-2  # the adapter matters
  assert abs(float(l_blk) - float(l_full)) <= 1e-6 * float(l_full)
  assert max_diff(g_blk, g_full) <= 6e-7  # measured up to 2.2e-7


def test_count_params_excludes_vocabulary_padding():
  from qwen_audio_jax.model import count_params
  padded = get_config("qwen-audio-7b")
  padded = padded.replace(decoder=dataclasses.replace(padded.decoder, vocab_pad_to=1024))
  assert abstract_params(padded)["decoder"]["lm_head"]["kernel"].shape == (4096, 156672)
  assert count_params(padded) == count_params(get_config("qwen-audio-7b"))


def test_chunked_loss_memory_is_a_fraction_of_the_logits():
  """Compiled temporaries of loss + all gradients, vocabulary 32768, B x S = 32 x 128: the full logits
  alone are 537 MB (fp32); blocks of 1024 columns must stay well under that, forward and backward
  (measured: 88 MB; 762 MB if the blocks are not rematerialised, 1110 MB unblocked)."""
  vocab, b, s = 32768, 32, 128
  cfg = tiny(vocab=vocab, d_model=16)
  params = abstract_params(cfg)
  tok = jax.ShapeDtypeStruct((b, s), jnp.int32)

  def temp_bytes(fn):
    grad = jax.jit(jax.grad(lambda p, i, t, m: fn(p, i, t, m)[0]))
    return grad.lower(params, tok, tok, tok).compile().memory_analysis().temp_size_in_bytes

  full = temp_bytes(lambda p, i, t, m: full_loss(cfg, p, i, jnp.ones_like(i), t, m))
  blocked = temp_bytes(lambda p, i, t, m: chunk_loss(cfg, p, i, jnp.ones_like(i), t, m, 1024))
  logits_bytes = b * s * vocab * 4
  print(f"temp bytes: full {full / 1e6:.0f} MB, blocked {blocked / 1e6:.0f} MB, logits {logits_bytes / 1e6:.0f} MB")
  assert full >= logits_bytes
  assert blocked <= logits_bytes / 4
