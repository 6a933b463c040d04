"""Encoder PETL (model/petl.py, configs/encoder_petl_tiny_synthetic.py): fresh adapters and fresh encoder
LoRA leave the logits bit for bit; prompt tuning matches a float64 numpy reference and keeps the audio
token count; only the PETL parameters (and the projector) get gradients; parameter counts match the formulas."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import test_model_numpy_ref as ref
from qwen_audio_jax.audio import lengths as L
from qwen_audio_jax.model import Model, count_params, get_config, init_params
from qwen_audio_jax.model import petl
from qwen_audio_jax.model.config import EncoderPetlConfig
from qwen_audio_jax.train import freeze, lora as lora_lib, model_fns, testing

from configs import encoder_petl_tiny_synthetic as recipe

PAD, START, END, EOT = 4000, 4001, 4002, 4003
ADAPTERS = [("sequential", "both"), ("sequential", "ffn"), ("parallel", "mhsa"), ("parallel", "both")]


def _base(family="tiny-qwen-audio"):
  base = get_config(family)
  return base.replace(encoder=dataclasses.replace(base.encoder, n_ctx=100),
                      decoder=dataclasses.replace(base.decoder, vocab_size=4096),
                      audio_pad_id=PAD, audio_start_id=START, audio_end_id=END, pad_id=EOT)


@pytest.fixture(scope="module")
def setup():
  base = _base()
  params = ref.random_params(base, seed=0)
  rng = np.random.default_rng(0)
  mel_frames = np.array([200, 131, 57])
  mel = rng.normal(size=(3, 80, 200)).astype(np.float32)
  t = L.encoder_frames(mel_frames)
  n = L.pooled_frames(t)
  rows = [[7, START] + [PAD] * int(n[0]) + [END, 9, START] + [PAD] * int(n[1]) + [END, 3],
          [5, START] + [PAD] * int(n[2]) + [END, 11, 12]]
  seq = max(map(len, rows))
  ids = np.array([[EOT] * (seq - len(r)) + r for r in rows])
  mask = (ids != EOT).astype(np.int32)
  want = np.asarray(jax.jit(Model(base).apply)({"params": params}, ids, mask, mel, t))
  return base, params, (ids, mask, mel, t), want


def _with_fresh(cfg, params):
  """cfg's fresh init with every parameter the base model has replaced by `params`."""
  fresh = init_params(cfg, jax.random.PRNGKey(5))
  return jax.tree_util.tree_map_with_path(
      lambda p, x: _get(params, p) if _has(params, p) else x, fresh)


def _has(tree, path):
  for k in path:
    if not isinstance(tree, dict) or k.key not in tree:
      return False
    tree = tree[k.key]
  return True


def _get(tree, path):
  for k in path:
    tree = tree[k.key]
  return tree


@pytest.mark.parametrize("kind,placement", ADAPTERS)
def test_fresh_adapters_leave_logits_bit_for_bit(setup, kind, placement):
  base, params, inputs, want = setup
  cfg = base.replace(encoder_petl=EncoderPetlConfig(adapter_reduction=8, adapter_kind=kind,
                                                    adapter_placement=placement))
  p = _with_fresh(cfg, params)
  apply = jax.jit(Model(cfg).apply)
  np.testing.assert_array_equal(np.asarray(apply({"params": p}, *inputs)), want)
  live = jax.tree_util.tree_map_with_path(
      lambda path, x: x + _noise(x) if "adapter" in jax.tree_util.keystr(path) else x, p)
  assert np.max(np.abs(np.asarray(apply({"params": live}, *inputs)) - want)) > 1e-3  # a trained adapter acts


def _noise(x, scale=0.3):
  return scale * np.random.default_rng(x.size).normal(size=x.shape).astype(np.float32)


def test_fresh_encoder_lora_leaves_logits_bit_for_bit(setup):
  base, params, inputs, want = setup
  adapters = lora_lib.init(jax.random.PRNGKey(1), params, recipe.ENCODER_LORA_TARGETS, 4)
  apply = jax.jit(Model(base).apply)
  got = apply({"params": params, "lora": lora_lib.collection(adapters, 2.0)}, *inputs)
  np.testing.assert_array_equal(np.asarray(got), want)
  live = jax.tree_util.tree_map(lambda x: x + _noise(x), adapters)
  got = apply({"params": params, "lora": lora_lib.collection(live, 2.0)}, *inputs)
  assert np.max(np.abs(np.asarray(got) - want)) > 1e-3


def np_encode_clip_prompts(params, cfg, mel, t):
  """Single clip, float64: conv + positions, the n prompts prepended, blocks, prompts dropped, pool, ln, proj."""
  enc = jax.tree.map(lambda x: np.asarray(x, np.float64), params["audio_encoder"])
  ecfg = cfg.encoder
  x = mel[:, :2 * t].T.astype(np.float64)
  x = ref._gelu(ref._conv1d(ref._gelu(ref._conv1d(x, enc["conv1"], 1)), enc["conv2"], 2))
  x = np.concatenate([enc["prompts"], x + enc["embed_positions"][:x.shape[0]]])
  h, dh = ecfg.n_heads, ecfg.head_dim
  for i in range(ecfg.n_layers):
    p = ref._layer(enc["layers"], i)
    a = ref._layer_norm(x, p["attn_ln"])
    q, k, v = (ref._dense(a, p["attn"][n]).reshape(-1, h, dh).transpose(1, 0, 2) for n in ("query", "key", "value"))
    o = ref._softmax(q @ k.transpose(0, 2, 1) / np.sqrt(dh)) @ v
    x = x + ref._dense(o.transpose(1, 0, 2).reshape(-1, h * dh), p["attn"]["out"])
    x = x + ref._dense(ref._gelu(ref._dense(ref._layer_norm(x, p["mlp_ln"]), p["mlp"]["fc1"])), p["mlp"]["fc2"])
  x = x[len(enc["prompts"]):]
  n = x.shape[0] // 2
  x = ref._layer_norm(x[:2 * n].reshape(n, 2, -1).mean(1), enc["ln_post"])
  return ref._dense(x, jax.tree.map(lambda y: np.asarray(y, np.float64), params["audio_projector"]))


@pytest.mark.parametrize("family", ["tiny-qwen-audio", "tiny-qwen2-audio"])
def test_prompt_tuning_matches_numpy_reference_and_keeps_token_count(setup, family):
  base = _base(family)
  cfg = base.replace(encoder_petl=EncoderPetlConfig(prompt_tokens=5))
  params = ref.random_params(cfg, seed=3)
  rng = np.random.default_rng(1)
  mel_frames = np.array([200, 200]) if family == "tiny-qwen2-audio" else np.array([200, 93])
  mel = rng.normal(size=(2, base.encoder.n_mels, 200)).astype(np.float32)
  t = L.encoder_frames(mel_frames)
  feats = np.asarray(Model(cfg).apply({"params": params}, mel, t, method=Model.encode_audio))
  base_shape = jax.eval_shape(lambda: Model(base).apply({"params": init_params(base, jax.random.PRNGKey(0))}, mel, t,
                                                          method=Model.encode_audio)).shape
  assert feats.shape == base_shape  # the LLM sees as many audio rows as without prompts
  err = 0.0
  for i in range(2):
    want = np_encode_clip_prompts(params, cfg, mel[i], int(t[i]))
    n = int(L.pooled_frames(t[i]))
    assert want.shape[0] == n
    err = max(err, np.max(np.abs(feats[i, :n] - want)) / np.max(np.abs(want)))
  print(f"{family} prompt tuning rel max|d| = {err:.2e}")
  assert err <= 3e-6


@pytest.mark.parametrize("mode", ["adapter", "prompt", "lora"])
def test_only_petl_parameters_and_projector_get_gradients(mode):
  c = recipe.get_config(f"10,{mode}")
  cfg = model_fns.resolve_model_config(c.model)
  small = _base()  # the recipe's model at a small vocabulary and n_ctx (fast)
  cfg = cfg.replace(encoder=small.encoder, decoder=small.decoder, audio_pad_id=PAD, audio_start_id=START,
                    audio_end_id=END, pad_id=EOT)
  fns = model_fns.build(cfg)
  params = fns.init(jax.random.PRNGKey(0))
  batch = testing.batch(cfg, seed=0, batch_size=2, seq_len=64, mel_frames=120)
  tr, fz = freeze.split(params, freeze.trainable_mask(params, c.train.freeze, c.train.trainable))
  adapters = lora_lib.init(jax.random.PRNGKey(1), params, c.lora.targets, c.lora.rank) if c.lora.enabled else None

  def objective(diff):
    lora = lora_lib.collection(diff["lora"], 2.0) if adapters is not None else None
    return fns.loss(freeze.merge(fz, diff["params"]), batch, True, lora=lora)[0]

  diff = {"params": tr, **({"lora": adapters} if adapters is not None else {})}
  grads = jax.grad(objective)(diff)
  paths = {jax.tree_util.keystr(p): float(jnp.max(jnp.abs(g)))
              for p, g in jax.tree_util.tree_flatten_with_path(grads)[0]}
  expect = {"adapter": "_adapter", "prompt": "prompts", "lora": "lora"}[mode]
  others = [p for p in paths if expect not in p and "audio_projector" not in p]
  assert not others, others
  assert any(expect in p for p in paths)
  # Fresh adapters / LoRA: the zero-initialised factor (up, B) gets the gradient first; prompts at once.
  live = [p for p, v in paths.items() if v > 0 and expect in p]
  assert live and all(("'up'" in p or "lora_b" in p or "prompts" in p) for p in live), live


@pytest.mark.parametrize("placement", ["mhsa", "ffn", "both"])
@pytest.mark.parametrize("reduction", [4, 8])
def test_parameter_counts_match_formulas(placement, reduction):
  base = get_config("tiny-qwen-audio")
  d, n_layers = base.encoder.d_model, base.encoder.n_layers
  cfg = base.replace(encoder_petl=EncoderPetlConfig(adapter_reduction=reduction, adapter_placement=placement))
  m = d // reduction
  per = 2 * d * m + m + d
  assert count_params(cfg) - count_params(base) == petl.adapter_param_count(d, cfg.encoder_petl, n_layers)
  assert count_params(cfg) - count_params(base) == n_layers * {"mhsa": 1, "ffn": 1, "both": 2}[placement] * per


def test_prompt_and_lora_counts_match_formulas():
  base = get_config("tiny-qwen-audio")
  d, n_layers = base.encoder.d_model, base.encoder.n_layers
  assert count_params(base.replace(encoder_petl=EncoderPetlConfig(prompt_tokens=64))) - count_params(base) == 64 * d
  params = jax.eval_shape(lambda: init_params(base, jax.random.PRNGKey(0)))
  adapters = jax.eval_shape(lambda: lora_lib.init(jax.random.PRNGKey(0), params, recipe.ENCODER_LORA_TARGETS, 4))
  assert lora_lib.count(adapters) == n_layers * 4 * (d * 4 + 4 * d)


def test_bad_petl_settings_are_refused():
  base = get_config("tiny-qwen-audio")
  with pytest.raises(ValueError, match="adapter_reduction=3"):
    init_params(base.replace(encoder_petl=EncoderPetlConfig(adapter_reduction=3)), jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="adapter_placement"):
    init_params(base.replace(encoder_petl=EncoderPetlConfig(adapter_reduction=8, adapter_placement="ffm")),
                jax.random.PRNGKey(0))
