"""MoWE-Audio (model/mowe.py): an empty pool / zero weak path is the base model bit for bit, the routed
mixture matches a float64 numpy reference, top-k picks exactly k encoders, the routing loss matches a hand
case, gradients reach routers and weak encoders and nothing frozen, rows do not see each other."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import test_model_numpy_ref as ref
from qwen_audio_jax.audio import lengths as L
from qwen_audio_jax.model import Model, get_config, init_params
from qwen_audio_jax.model import mowe as mowe_lib
from qwen_audio_jax.model.config import MoweConfig
from qwen_audio_jax.train import freeze, model_fns, testing

PAD, START, END, EOT = 4000, 4001, 4002, 4003


def _cfg(family="tiny-qwen-audio", top_k=1, routers="both", n_weak=3):
  base = get_config(family)
  base = base.replace(encoder=dataclasses.replace(base.encoder, n_ctx=100),
                      decoder=dataclasses.replace(base.decoder, vocab_size=4096),
                      audio_pad_id=PAD, audio_start_id=START, audio_end_id=END, pad_id=EOT)
  e = base.encoder
  pool = (dataclasses.replace(e, d_model=32, n_heads=2, n_layers=1, mlp_dim=64),
          dataclasses.replace(e, d_model=48, n_heads=3, n_layers=2, mlp_dim=96),
          dataclasses.replace(e, d_model=32, n_heads=4, n_layers=1, mlp_dim=32))[:n_weak]
  return base, base.replace(mowe=MoweConfig(weak=pool, top_k=top_k, routers=routers))


@pytest.fixture(scope="module")
def v1():
  base, cfg = _cfg()
  return base, cfg, ref.random_params(cfg, seed=1, scale=0.15)


@pytest.fixture(scope="module")
def clips():
  rng = np.random.default_rng(0)
  mel_frames = np.array([200, 131, 57])
  mel = rng.normal(size=(3, 80, 200)).astype(np.float32)
  return mel, L.encoder_frames(mel_frames)


def _ids(t):
  n = L.pooled_frames(t)
  rows = [[7, 8, START] + [PAD] * int(n[0]) + [END, 9, START] + [PAD] * int(n[1]) + [END, 3],
          [5, START] + [PAD] * int(n[2]) + [END, 11, 12]]
  seq = max(map(len, rows))
  ids = np.array([[EOT] * (seq - len(r)) + r for r in rows])
  return ids, (ids != EOT).astype(np.int32)


def _base_params(params):
  return {k: v for k, v in params.items() if k != "mowe"}


def test_empty_pool_and_zero_weak_path_give_base_logits_bit_for_bit(v1, clips):
  base, cfg, params = v1
  mel, t = clips
  ids, mask = _ids(t)
  want = np.asarray(Model(base).apply({"params": _base_params(params)}, ids, mask, mel, t))
  empty = base.replace(mowe=MoweConfig(weak=()))
  assert jax.tree.structure(init_params(empty, jax.random.PRNGKey(0))) == jax.tree.structure(_base_params(params))
  got_empty = np.asarray(Model(empty).apply({"params": _base_params(params)}, ids, mask, mel, t))
  zero = jax.tree_util.tree_map_with_path(
      lambda p, x: np.zeros_like(x) if "proj_" in jax.tree_util.keystr(p) else x, params)
  got_zero = np.asarray(Model(cfg).apply({"params": zero}, ids, mask, mel, t))
  live = np.asarray(Model(cfg).apply({"params": params}, ids, mask, mel, t))
  np.testing.assert_array_equal(got_empty, want)
  np.testing.assert_array_equal(got_zero, want)
  assert np.max(np.abs(live - want)) > 1e-3  # the weak path does change the model when it is live


def np_mowe_clip(params, cfg, mel, t):
  """float64: base projector + sum_k (w_k + p_k m_k) W_k weak_k, routers on the masked mean of the base."""
  n = int(L.pooled_frames(t))
  d_enc = cfg.encoder.d_model
  base_feats = ref.np_encode_clip({**params, "audio_projector": {"kernel": np.eye(d_enc)}}, cfg, mel, t)
  out = ref.np_encode_clip(params, cfg, mel, t)
  m = jax.tree.map(lambda x: np.asarray(x, np.float64), params["mowe"])
  k_weak = len(cfg.mowe.weak)
  w = ref._softmax(m["router_logits"])
  p = ref._softmax(ref._dense(base_feats.mean(0), m["gate"]))
  top = np.argsort(-p, kind="stable")[:cfg.mowe.top_k]
  gate = np.zeros(k_weak)
  gate[top] = p[top]
  for k in range(k_weak):
    wcfg = mowe_lib.weak_config(cfg, k)
    e = ref.np_encode_clip({"audio_encoder": params["mowe"][f"weak_{k}"],
                            "audio_projector": params["mowe"][f"proj_{k}"]}, wcfg, mel, t)
    out = out + (w[k] + gate[k]) * e
  assert out.shape[0] == n
  return out, p, top


def test_mowe_features_match_float64_numpy_reference(v1, clips):
  _, cfg, params = v1
  mel, t = clips
  feats, state = Model(cfg).apply({"params": params}, mel, t, method=Model.encode_audio, mutable=["intermediates"])
  feats = np.asarray(feats)
  probs = np.asarray(state["intermediates"]["mowe"]["mowe_probs"][0])
  err, tops = 0.0, []
  for i in range(3):
    want, p, top = np_mowe_clip(params, cfg, mel[i], int(t[i]))
    n = want.shape[0]
    err = max(err, np.max(np.abs(feats[i, :n] - want)) / np.max(np.abs(want)))
    np.testing.assert_allclose(probs[i], p, rtol=2e-5, atol=1e-6)
    tops.append(int(top[0]))
  print(f"MoWE features rel max|d| = {err:.2e}; top-1 per clip {tops}")
  assert err <= 3e-6


@pytest.mark.parametrize("k", [1, 2])
def test_top_k_selects_exactly_k_encoders_per_clip(clips, k):
  _, cfg = _cfg(top_k=k)
  params = ref.random_params(cfg, seed=2, scale=0.15)
  mel, t = clips
  _, state = Model(cfg).apply({"params": params}, mel, t, method=Model.encode_audio, mutable=["intermediates"])
  probs = np.asarray(state["intermediates"]["mowe"]["mowe_probs"][0])
  mask = np.asarray(state["intermediates"]["mowe"]["mowe_mask"][0])
  assert set(np.unique(mask)) <= {0.0, 1.0}
  np.testing.assert_array_equal(mask.sum(-1), np.full(3, k))
  for row_p, row_m in zip(probs, mask):
    assert set(np.flatnonzero(row_m)) == set(np.argsort(-row_p)[:k])


def test_top_k_ties_still_select_k():
  mask = np.asarray(mowe_lib.top_k_mask(jnp.full((2, 4), 0.25), 3))
  np.testing.assert_array_equal(mask, [[1, 1, 1, 0], [1, 1, 1, 0]])


def test_routing_loss_matches_hand_computed_case():
  probs = jnp.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
  mask = mowe_lib.top_k_mask(probs, 1)  # [1,0],[1,0],[0,1]: shares 2/3, 1/3; mean p 0.6, 0.4
  np.testing.assert_allclose(float(mowe_lib.aux_loss(probs, mask)), 2 * (2 / 3 * 0.6 + 1 / 3 * 0.4), rtol=1e-6)
  # a padding clip (weight 0) counts in neither mean: shares 1, 0; mean p 0.75, 0.25
  np.testing.assert_allclose(float(mowe_lib.aux_loss(probs, mask, jnp.array([1, 1, 0]))), 2 * 0.75, rtol=1e-6)
  balanced = jnp.array([[0.5, 0.5], [0.5, 0.5]])
  np.testing.assert_allclose(float(mowe_lib.aux_loss(balanced, jnp.array([[1.0, 0], [0, 1.0]]))), 1.0, rtol=1e-6)


@pytest.mark.parametrize("family", ["tiny-qwen-audio", "tiny-qwen2-audio"])
def test_gradients_reach_routers_and_weak_encoders_only(family):
  _, cfg = _cfg(family, n_weak=2)
  fns = model_fns.build(cfg)
  params = fns.init(jax.random.PRNGKey(0))
  batch = testing.batch(cfg, seed=0, batch_size=3, seq_len=48, mel_frames=120)
  frozen = (r"audio_encoder/.*", r"decoder/.*") + ((r"audio_bos_eos/.*",) if cfg.audio_bos_eos else ())
  mask = freeze.trainable_mask(params, frozen)
  tr, fz = freeze.split(params, mask)

  def objective(trainable):
    loss, _, stats = fns.loss_and_stats(freeze.merge(fz, trainable), batch, True)
    return loss, stats

  grads, stats = jax.jit(jax.grad(objective, has_aux=True))(tr)
  assert set(grads) == {"mowe", "audio_projector"}
  flat = {jax.tree_util.keystr(p): float(jnp.max(jnp.abs(g)))
             for p, g in jax.tree_util.tree_flatten_with_path(grads)[0]}
  assert not any("embed_positions" in p for p in flat)
  dead = [p for p, v in flat.items() if v == 0.0]
  assert not dead, dead
  for k in range(2):
    assert f"mowe/usage/weak_{k}" in stats and f"mowe/weight/weak_{k}" in stats
  np.testing.assert_allclose(sum(float(stats[f"mowe/usage/weak_{k}"]) for k in range(2)), 1.0, rtol=1e-6)
  assert 1.0 <= float(stats["mowe/aux_loss"]) <= 2.0


def test_rows_do_not_depend_on_other_rows(v1, clips):
  _, cfg, params = v1
  mel, t = clips
  both = np.asarray(Model(cfg).apply({"params": params}, mel, t, method=Model.encode_audio))
  for i in range(3):
    alone = np.asarray(Model(cfg).apply({"params": params}, mel[i:i + 1], t[i:i + 1], method=Model.encode_audio))
    n = int(L.pooled_frames(t[i]))
    np.testing.assert_allclose(alone[0, :n], both[i, :n], rtol=0, atol=2e-6)


def test_bad_pools_are_refused():
  base, cfg = _cfg()
  bad = cfg.replace(mowe=dataclasses.replace(cfg.mowe, weak=(dataclasses.replace(cfg.mowe.weak[0], n_mels=128),)))
  with pytest.raises(ValueError, match=r"mowe.weak\[0\].n_mels"):
    init_params(bad, jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="top_k"):
    init_params(cfg.replace(mowe=dataclasses.replace(cfg.mowe, top_k=4)), jax.random.PRNGKey(0))


def test_paper_recipe_with_llm_lora_trains_mowe_projector_and_adapters_only():
  import os  # pylint: disable=import-outside-toplevel
  import runpy  # pylint: disable=import-outside-toplevel
  from qwen_audio_jax.train import lora as lora_lib  # pylint: disable=import-outside-toplevel
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  recipe = runpy.run_path(os.path.join(root, "configs", "mowe_tiny_synthetic.py"))["get_config"]
  c = recipe("10,paper,lora")
  assert c.lora.enabled and all(t.startswith("decoder/") for t in c.lora.targets)
  with pytest.raises(ValueError, match="STEPS"):
    recipe("10,lora")  # LoRA on the LLM is an option of the paper's setting
  _, cfg = _cfg(n_weak=2)
  fns = model_fns.build(cfg)
  params = fns.init(jax.random.PRNGKey(0))
  batch = testing.batch(cfg, seed=0, batch_size=2, seq_len=48, mel_frames=120)
  tr, fz = freeze.split(params, freeze.trainable_mask(params, c.train.freeze, c.train.trainable))
  adapters = lora_lib.init(jax.random.PRNGKey(1), params, c.lora.targets, c.lora.rank)
  adapters = jax.tree.map(lambda x: x + 0.01 if x.ndim and not x.any() else x, adapters)  # B != 0: both factors live

  def objective(diff):
    lora = lora_lib.collection(diff["lora"], lora_lib.scale(c.lora.rank, c.lora.alpha))
    return fns.loss_and_stats(freeze.merge(fz, diff["params"]), batch, True, lora=lora)[0]

  grads = jax.jit(jax.grad(objective))({"params": tr, "lora": adapters})
  assert set(grads["params"]) == {"mowe", "audio_projector"}
  assert set(grads["lora"]) == {"decoder"}, set(grads["lora"])
  dead = [jax.tree_util.keystr(p) for p, g in jax.tree_util.tree_flatten_with_path(grads)[0] if not jnp.any(g)]
  assert not dead, dead
