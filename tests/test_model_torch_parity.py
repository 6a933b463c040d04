"""Parity of the Flax model with transformers (eager attention, fp32): WhisperEncoder, Qwen2ForCausalLM,
Qwen2AudioForConditionalGeneration. Tiny random configs; weights copied by a small mapping written here.

Errors are relative, max|ours - ref| / max|ref|, asserted at a few times what fp32 achieves (measured on
CPU, highest matmul precision): whisper encoder 8.1e-7, Qwen2 decoder 5.2e-7, Qwen2-Audio 1.0e-6. An
exact -> tanh GELU swap in the encoder gives 3.5e-4 / 5.4e-4 (caught ~90x over the bound).
"""

import dataclasses

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from qwen_audio_jax.audio import lengths as L  # noqa: E402
from qwen_audio_jax.model import EncoderConfig, Model, ModelConfig, get_config  # noqa: E402

D, HEADS, LAYERS, MLP_ENC, MLP_DEC, VOCAB = 64, 4, 2, 256, 160, 512
ENCODER_TOL, DECODER_TOL, QWEN2_AUDIO_TOL = 4e-6, 3e-6, 5e-6  # relative; ~4-6x the measured error


def _rel(ours, ref):
  return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


def _randomize(module, seed):
  """Replace every weight (incl. biases and norm scales) by noise so nothing is trivially 0/1."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in module.named_parameters():
      scale = 0.3 if ("norm" in name and name.endswith("weight")) else 0.08
      base = 1.0 if ("norm" in name and name.endswith("weight")) else 0.0
      p.copy_(base + scale * torch.randn(p.shape, generator=gen))
  return module.eval()


def _np(t):
  return t.detach().float().numpy()


def _linear(sd, prefix, bias=True):
  out = {"kernel": _np(sd[f"{prefix}.weight"]).T}
  if bias:
    out["bias"] = _np(sd[f"{prefix}.bias"])
  return out


def _norm(sd, prefix, bias=True):
  out = {"scale": _np(sd[f"{prefix}.weight"])}
  if bias:
    out["bias"] = _np(sd[f"{prefix}.bias"])
  return out


def _stack(trees):
  return jax.tree.map(lambda *xs: np.stack(xs), *trees)


def whisper_encoder_params(sd, p, n_layers):
  """HF WhisperEncoder / Qwen2AudioEncoder state dict (prefix p) -> our audio_encoder tree."""
  layers = [{
      "attn_ln": _norm(sd, f"{p}layers.{i}.self_attn_layer_norm"),
      "attn": {"query": _linear(sd, f"{p}layers.{i}.self_attn.q_proj"),
               "key": _linear(sd, f"{p}layers.{i}.self_attn.k_proj", bias=False),
               "value": _linear(sd, f"{p}layers.{i}.self_attn.v_proj"),
               "out": _linear(sd, f"{p}layers.{i}.self_attn.out_proj")},
      "mlp_ln": _norm(sd, f"{p}layers.{i}.final_layer_norm"),
      "mlp": {"fc1": _linear(sd, f"{p}layers.{i}.fc1"), "fc2": _linear(sd, f"{p}layers.{i}.fc2")},
  } for i in range(n_layers)]
  conv = lambda name: {"kernel": _np(sd[f"{p}{name}.weight"]).transpose(2, 1, 0), "bias": _np(sd[f"{p}{name}.bias"])}
  return {"conv1": conv("conv1"), "conv2": conv("conv2"), "embed_positions": _np(sd[f"{p}embed_positions.weight"]),
          "layers": _stack(layers), "ln_post": _norm(sd, f"{p}layer_norm")}


def qwen2_decoder_params(sd, p, lm_head, n_layers):
  """HF Qwen2Model state dict (prefix p) + lm_head weight name -> our decoder tree."""
  layers = [{
      "ln_1": _norm(sd, f"{p}layers.{i}.input_layernorm", bias=False),
      "attn": {"q": _linear(sd, f"{p}layers.{i}.self_attn.q_proj"), "k": _linear(sd, f"{p}layers.{i}.self_attn.k_proj"),
               "v": _linear(sd, f"{p}layers.{i}.self_attn.v_proj"),
               "o": _linear(sd, f"{p}layers.{i}.self_attn.o_proj", bias=False)},
      "ln_2": _norm(sd, f"{p}layers.{i}.post_attention_layernorm", bias=False),
      "mlp": {"gate": _linear(sd, f"{p}layers.{i}.mlp.gate_proj", bias=False),
              "up": _linear(sd, f"{p}layers.{i}.mlp.up_proj", bias=False),
              "down": _linear(sd, f"{p}layers.{i}.mlp.down_proj", bias=False)},
  } for i in range(n_layers)]
  return {"embed": {"embedding": _np(sd[f"{p}embed_tokens.weight"])}, "layers": _stack(layers),
          "final_norm": _norm(sd, f"{p}norm", bias=False), "lm_head": {"kernel": _np(sd[lm_head]).T}}


def _qwen2_text_config(kv_heads):
  return dict(vocab_size=VOCAB, hidden_size=D, intermediate_size=MLP_DEC, num_hidden_layers=LAYERS,
              num_attention_heads=HEADS, num_key_value_heads=kv_heads, rms_norm_eps=1e-5, rope_theta=10000.0,
              max_position_embeddings=4096, tie_word_embeddings=False)


def _left_padded_ids(rng, lengths, seq):
  ids = rng.integers(0, 400, size=(len(lengths), seq))
  mask = np.zeros((len(lengths), seq), np.int64)
  for b, n in enumerate(lengths):
    mask[b, seq - n:] = 1
    ids[b, :seq - n] = 0
  return ids, mask


def _positions(mask):
  return np.maximum(np.cumsum(mask, axis=1) - 1, 0)


def test_whisper_encoder_matches_transformers():
  hf_cfg = transformers.WhisperConfig(num_mel_bins=80, d_model=D, encoder_layers=LAYERS,
                                      encoder_attention_heads=HEADS, encoder_ffn_dim=MLP_ENC, decoder_layers=1,
                                      decoder_attention_heads=HEADS, decoder_ffn_dim=MLP_ENC, max_source_positions=50)
  hf = _randomize(transformers.models.whisper.modeling_whisper.WhisperEncoder._from_config(
      hf_cfg, attn_implementation="eager"), seed=0)
  cfg = ModelConfig(family="whisper", decoder=None, audio_bos_eos=False,
                    encoder=EncoderConfig(n_mels=80, n_ctx=50, d_model=D, n_heads=HEADS, n_layers=LAYERS,
                                          mlp_dim=MLP_ENC, pool=False))
  params = {"audio_encoder": whisper_encoder_params(hf.state_dict(), "", LAYERS)}
  mel = np.random.default_rng(0).normal(size=(2, 80, 100)).astype(np.float32)
  with torch.no_grad():
    ref = _np(hf(torch.from_numpy(mel)).last_hidden_state)
  ours = np.asarray(Model(cfg).apply({"params": params}, mel, method=Model.encode_audio))
  assert ours.shape == ref.shape == (2, 50, D)
  rel = _rel(ours, ref)
  print(f"whisper encoder: max|d|/max|ref| = {rel:.2e}")
  assert rel <= ENCODER_TOL


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_qwen2_decoder_matches_transformers_left_padded(kv_heads):
  hf = _randomize(transformers.Qwen2ForCausalLM._from_config(
      transformers.Qwen2Config(**_qwen2_text_config(kv_heads)), attn_implementation="eager"), seed=1)
  cfg = get_config("tiny-qwen", decoder=dataclasses.replace(
      get_config("tiny-qwen").decoder, vocab_size=VOCAB, n_kv_heads=kv_heads, dynamic_ntk=False, logn_attn=False))
  params = {"decoder": qwen2_decoder_params(hf.state_dict(), "model.", "lm_head.weight", LAYERS)}
  ids, mask = _left_padded_ids(np.random.default_rng(1), [12, 7, 3], 12)
  with torch.no_grad():
    ref = _np(hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                 position_ids=torch.from_numpy(_positions(mask))).logits)
  ours = np.asarray(Model(cfg).apply({"params": params}, ids, mask))
  valid = mask.astype(bool)
  err = _rel(ours[valid], ref[valid])
  print(f"qwen2 decoder (kv_heads={kv_heads}): max|d|/max|ref| = {err:.2e}")
  assert err <= DECODER_TOL


def test_qwen2_audio_matches_transformers():
  pad_id, bos_id, eos_id = 500, 501, 502
  hf_cfg = transformers.Qwen2AudioConfig(
      audio_config=dict(num_mel_bins=128, encoder_layers=LAYERS, encoder_attention_heads=HEADS,
                        encoder_ffn_dim=MLP_ENC, d_model=D, max_source_positions=100),
      text_config=dict(model_type="qwen2", **_qwen2_text_config(2)), audio_token_index=pad_id)
  hf = _randomize(transformers.Qwen2AudioForConditionalGeneration._from_config(hf_cfg, attn_implementation="eager"),
                  seed=2)
  base = get_config("tiny-qwen2-audio")
  cfg = base.replace(encoder=dataclasses.replace(base.encoder, n_ctx=100),
                     decoder=dataclasses.replace(base.decoder, vocab_size=VOCAB, n_kv_heads=2),
                     audio_pad_id=pad_id, audio_start_id=bos_id, audio_end_id=eos_id)
  sd = hf.state_dict()
  params = {"audio_encoder": whisper_encoder_params(sd, "model.audio_tower.", LAYERS),
            "audio_projector": _linear(sd, "model.multi_modal_projector.linear"),
            "decoder": qwen2_decoder_params(sd, "model.language_model.", "lm_head.weight", LAYERS)}

  rng = np.random.default_rng(2)
  mel_frames = np.array([200, 130, 57])  # three clips of different lengths, 200-frame window
  t = L.encoder_frames(mel_frames)
  n = L.pooled_frames(t)
  mel = rng.normal(size=(3, 128, 200)).astype(np.float32)
  span = lambda k: [bos_id] + [pad_id] * int(n[k]) + [eos_id]
  text = lambda m: list(rng.integers(0, 400, size=m))
  rows = [text(3) + span(0) + text(4) + span(1) + text(5), span(2) + text(6)]
  seq = max(map(len, rows))
  ids = np.array([[0] * (seq - len(r)) + r for r in rows])
  mask = np.array([[0] * (seq - len(r)) + [1] * len(r) for r in rows])
  feature_mask = (np.arange(200)[None, :] < mel_frames[:, None]).astype(np.int64)
  with torch.no_grad():
    ref = _np(hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                 input_features=torch.from_numpy(mel), feature_attention_mask=torch.from_numpy(feature_mask),
                 position_ids=torch.from_numpy(_positions(mask))).logits)
  ours = np.asarray(Model(cfg).apply({"params": params}, ids, mask, mel, t))
  valid = mask.astype(bool)
  err = _rel(ours[valid], ref[valid])
  print(f"qwen2-audio: max|d|/max|ref| = {err:.2e}")
  assert err <= QWEN2_AUDIO_TOL
