"""PyTorch reference models (transformers) built from a source checkpoint, for parity checks.

The renames here are written from the spec (§2.7, §3.5, §8) independently of conversion/maps, so the
parity report also catches a wrong name map. Every reference runs in float32 with eager attention.

A reference exposes `encode(mel [1, n_mels, 2*n_ctx], frames=None) -> [rows, d]` (encoder output,
projected for audio LLMs, like `Model.encode_audio`; with `frames` = T of a shorter clip, the clip's
own rows under the family's padding rule) and/or `logits(ids [1, S], mel | None, frames) -> [S, V]`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable

import numpy as np
import torch
import transformers

from conversion.readers import TensorSource, numpy_to_torch
from qwen_audio_jax.audio.lengths import pooled_frames
from conversion.errors import ConversionError

# (openai / Qwen-Audio-v1 fragment, transformers fragment); spec §2.7 / HF convert_openai_to_hf.
WHISPER_RENAMES = (
    (".blocks.", ".layers."), (".attn.query.", ".self_attn.q_proj."), (".attn.key.", ".self_attn.k_proj."),
    (".attn.value.", ".self_attn.v_proj."), (".attn.out.", ".self_attn.out_proj."),
    (".attn_ln.", ".self_attn_layer_norm."), (".mlp.0.", ".fc1."), (".mlp.2.", ".fc2."),
    (".mlp_ln.", ".final_layer_norm."), (".ln_post.", ".layer_norm."),
    (".positional_embedding", ".embed_positions.weight"),
)
# Text decoder only (applied before WHISPER_RENAMES); openai `TextDecoder` -> transformers `WhisperDecoder`.
WHISPER_DECODER_RENAMES = (
    (".cross_attn.query.", ".encoder_attn.q_proj."), (".cross_attn.key.", ".encoder_attn.k_proj."),
    (".cross_attn.value.", ".encoder_attn.v_proj."), (".cross_attn.out.", ".encoder_attn.out_proj."),
    (".cross_attn_ln.", ".encoder_attn_layer_norm."), (".token_embedding.", ".embed_tokens."),
    (".ln.", ".layer_norm."),
)


def openai_to_hf_encoder(name: str, old_prefix: str, new_prefix: str) -> str:
  name = "." + name.removeprefix(old_prefix)
  for a, b in WHISPER_RENAMES:
    name = name.replace(a, b)
  return new_prefix + name.lstrip(".")


@dataclasses.dataclass
class Reference:
  encode: Callable[[np.ndarray], np.ndarray] | None = None
  logits: Callable[[np.ndarray, np.ndarray | None, int | None], np.ndarray] | None = None
  audio_ids: dict | None = None  # ids the prompt builder needs (start/end/pad) for audio LLMs


def _state(source: TensorSource, names) -> dict[str, torch.Tensor]:
  return {n: numpy_to_torch(source.read(n)).float() for n in names}


def _load(module: torch.nn.Module, state: dict, what: str) -> torch.nn.Module:
  missing, unexpected = module.load_state_dict(state, strict=False)
  missing = [m for m in missing if not m.endswith("inv_freq")]
  if missing or unexpected:
    raise ConversionError(f"reference {what}: missing {missing[:3]} unexpected {unexpected[:3]}")
  return module.float().eval()


def _np(t: torch.Tensor) -> np.ndarray:
  return t.detach().float().numpy()


# ------------------------------------------------------------------------------------------------
# Whisper
# ------------------------------------------------------------------------------------------------


def whisper_logits(model):
  def logits(ids, mel, frames=None):
    with torch.no_grad():
      out = model(input_features=torch.from_numpy(np.array(mel)), decoder_input_ids=torch.from_numpy(ids))
      return _np(out.logits[0])
  return logits


def whisper_from_hf(path: str) -> Reference:
  model = transformers.WhisperForConditionalGeneration.from_pretrained(
      path, attn_implementation="eager", dtype=torch.float32).eval()
  enc = model.model.encoder
  return Reference(encode=lambda mel, frames=None: run_encoder(enc, mel), logits=whisper_logits(model))


def whisper_from_openai(source: TensorSource) -> Reference:
  d = source.dims
  last = d["n_vocab"] - 1  # special ids only matter to generate(); keep them inside a tiny test vocabulary
  ids = {} if d["n_vocab"] > 50258 else dict(pad_token_id=last, bos_token_id=last, eos_token_id=last,
                                             decoder_start_token_id=last)
  cfg = transformers.WhisperConfig(
      **ids, vocab_size=d["n_vocab"], num_mel_bins=d["n_mels"], d_model=d["n_audio_state"],
      encoder_layers=d["n_audio_layer"], encoder_attention_heads=d["n_audio_head"],
      encoder_ffn_dim=4 * d["n_audio_state"], max_source_positions=d["n_audio_ctx"],
      decoder_layers=d["n_text_layer"], decoder_attention_heads=d["n_text_head"],
      decoder_ffn_dim=4 * d["n_text_state"], max_target_positions=d["n_text_ctx"])
  model = transformers.WhisperForConditionalGeneration._from_config(  # pylint: disable=protected-access
      cfg, attn_implementation="eager")
  state = {}
  for name, t in _state(source, source.infos).items():
    tower = name.partition(".")[0]
    for a, b in WHISPER_DECODER_RENAMES if tower == "decoder" else ():
      name = name.replace(a, b)
    state[openai_to_hf_encoder(name, tower + ".", f"model.{tower}.")] = t
  state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]  # openai's logits use the embedding
  model = _load(model, state, "WhisperForConditionalGeneration")
  return Reference(encode=lambda mel, frames=None: run_encoder(model.model.encoder, mel),
                   logits=whisper_logits(model))


def run_encoder(enc, mel: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return _np(enc(torch.from_numpy(np.array(mel))).last_hidden_state[0])


# ------------------------------------------------------------------------------------------------
# Qwen v1 LLM as a Qwen2ForCausalLM (same math for <= seq_length tokens: NTK/logn inactive)
# ------------------------------------------------------------------------------------------------


def qwen2_config_from_v1(c: dict) -> transformers.Qwen2Config:
  heads = c["num_attention_heads"]
  return transformers.Qwen2Config(
      vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"] // 2,
      num_hidden_layers=c["num_hidden_layers"], num_attention_heads=heads, num_key_value_heads=heads,
      head_dim=c.get("kv_channels", c["hidden_size"] // heads), rms_norm_eps=c.get("layer_norm_epsilon", 1e-6),
      rope_theta=float(c.get("rotary_emb_base", 10000)), max_position_embeddings=8192, tie_word_embeddings=False)


def v1_llm_to_qwen2(state: dict, n_layers: int, q: int, kv: int) -> dict:
  """v1 names -> Qwen2ForCausalLM names: split c_attn rows q|k|v; w2 -> gate_proj, w1 -> up_proj."""
  out = {"model.embed_tokens.weight": state["transformer.wte.weight"],
         "model.norm.weight": state["transformer.ln_f.weight"], "lm_head.weight": state["lm_head.weight"]}
  for i in range(n_layers):
    s, t = f"transformer.h.{i}.", f"model.layers.{i}."
    out[t + "input_layernorm.weight"] = state[s + "ln_1.weight"]
    for kind in ("weight", "bias"):
      fused = state[s + f"attn.c_attn.{kind}"]
      for name, part in zip("qkv", torch.split(fused, [q, kv, kv], dim=0)):
        out[t + f"self_attn.{name}_proj.{kind}"] = part
    out[t + "self_attn.o_proj.weight"] = state[s + "attn.c_proj.weight"]
    out[t + "post_attention_layernorm.weight"] = state[s + "ln_2.weight"]
    out[t + "mlp.gate_proj.weight"] = state[s + "mlp.w2.weight"]
    out[t + "mlp.up_proj.weight"] = state[s + "mlp.w1.weight"]
    out[t + "mlp.down_proj.weight"] = state[s + "mlp.c_proj.weight"]
  return out


def v1_llm(source: TensorSource, raw: dict) -> transformers.Qwen2ForCausalLM:
  cfg = qwen2_config_from_v1(raw)
  llm = ("transformer.wte", "transformer.h.", "transformer.ln_f", "lm_head")
  names = [n for n in source.infos if n.startswith(llm)]
  state = _state(source, [n for n in names if not re.search(r"(\.inv_freq|\.masked_bias|\.attn\.bias)$", n)])
  q = cfg.num_attention_heads * cfg.head_dim
  model = transformers.Qwen2ForCausalLM._from_config(  # pylint: disable=protected-access
      cfg, attn_implementation="eager")
  return _load(model, v1_llm_to_qwen2(state, cfg.num_hidden_layers, q, q), "Qwen2ForCausalLM")


def lm_logits(model, ids: np.ndarray, embeds: torch.Tensor | None = None) -> np.ndarray:
  with torch.no_grad():
    if embeds is None:
      return _np(model(input_ids=torch.from_numpy(ids)).logits[0])
    return _np(model(inputs_embeds=embeds).logits[0])


def qwen_v1(source: TensorSource, raw: dict) -> Reference:
  model = v1_llm(source, raw)
  return Reference(logits=lambda ids, mel=None, frames=None: lm_logits(model, ids))


# ------------------------------------------------------------------------------------------------
# Qwen-Audio v1: Qwen2AudioEncoder (same blocks, avg-pool, ln) + proj + bos/eos + the v1 LLM
# ------------------------------------------------------------------------------------------------


def _v1_encode(enc, proj, mel: torch.Tensor, frames: int | None) -> torch.Tensor:
  """Qwen-Audio v1 AudioEncoder on one clip: mel cropped to 2*T frames (T = `frames`, default the
  full window), conv/GELU x2, + positions[:T], blocks, AvgPool1d(2, 2), ln, proj -> [T // 2, d_llm]."""
  frames = frames or enc.config.max_source_positions
  with torch.no_grad():
    x = mel[:, :, :2 * frames]
    x = torch.nn.functional.gelu(enc.conv2(torch.nn.functional.gelu(enc.conv1(x)))).permute(0, 2, 1)
    x = x + enc.embed_positions.weight[:x.shape[1]]
    for layer in enc.layers:
      x = layer(x, None)
    x = enc.avg_pooler(x.permute(0, 2, 1)).permute(0, 2, 1)
    return proj(enc.layer_norm(x))[0]


def qwen_audio_v1(source: TensorSource, raw: dict) -> Reference:
  a = raw["audio"]
  enc_cfg = transformers.Qwen2AudioEncoderConfig(
      num_mel_bins=a["n_mels"], encoder_layers=a["n_layer"], encoder_attention_heads=a["n_head"],
      encoder_ffn_dim=4 * a["n_state"], d_model=a["n_state"], max_source_positions=a["n_ctx"])
  enc = transformers.Qwen2AudioEncoder._from_config(  # pylint: disable=protected-access
      enc_cfg, attn_implementation="eager")
  p = "transformer.audio."
  names = [n for n in source.infos if n.startswith(p) and not n.startswith((p + "proj.", p + "audio_bos_eos"))]
  enc = _load(enc, {openai_to_hf_encoder(n, p, ""): t for n, t in _state(source, names).items()}, "Qwen2AudioEncoder")
  proj = torch.nn.Linear(a["n_state"], raw["hidden_size"])
  _load(proj, {"weight": _state(source, [p + "proj.weight"])[p + "proj.weight"],
               "bias": _state(source, [p + "proj.bias"])[p + "proj.bias"]}, "proj")
  bos_eos = _state(source, [p + "audio_bos_eos_token.weight"])[p + "audio_bos_eos_token.weight"]
  llm = v1_llm(source, raw)
  start = a.get("audio_start_id", 155163)

  def encode(mel, frames=None):
    return _np(_v1_encode(enc, proj, torch.from_numpy(np.array(mel)), frames))

  def logits(ids, mel, frames=None):
    feats = torch.from_numpy(encode(mel, frames))
    with torch.no_grad():
      h = llm.get_input_embeddings()(torch.from_numpy(ids))[0].clone()
    row = ids[0]
    a_pos, e_pos = int(np.flatnonzero(row == start)[0]), int(np.flatnonzero(row == start + 1)[0])
    n = e_pos - a_pos - 1
    h[a_pos], h[a_pos + 1:e_pos], h[e_pos] = bos_eos[0], feats[:n], bos_eos[1]
    return lm_logits(llm, ids, h[None])

  return Reference(encode=encode, logits=logits, audio_ids={"start": start, "end": start + 1, "pad": 151851})


# ------------------------------------------------------------------------------------------------
# Qwen2-Audio (transformers)
# ------------------------------------------------------------------------------------------------


def qwen2_audio(path: str) -> Reference:
  model = transformers.Qwen2AudioForConditionalGeneration.from_pretrained(
      path, attn_implementation="eager", dtype=torch.float32).eval()

  def encode(mel, frames=None):
    """Projected encoder output; with `frames` (T) padded keys are masked and the first n rows kept."""
    kw, n = {}, None
    if frames is not None:
      t_max = model.config.audio_config.max_source_positions
      keep = torch.arange(t_max) < frames
      kw["attention_mask"] = torch.where(keep, 0.0, torch.finfo(torch.float32).min)[None, None, None, :].expand(
          1, 1, t_max, t_max)
      n = int(pooled_frames(frames))
    with torch.no_grad():
      out = model.model.audio_tower(torch.from_numpy(np.array(mel)), **kw).last_hidden_state
      return _np(model.model.multi_modal_projector(out)[0])[:n]

  def logits(ids, mel, frames=None):
    with torch.no_grad():
      kw = {}
      if mel is not None:  # 2T valid mel frames give T encoder frames ((2T - 1) // 2 + 1)
        valid = mel.shape[-1] if frames is None else 2 * frames
        kw = dict(input_features=torch.from_numpy(np.array(mel)),
                  feature_attention_mask=(torch.arange(mel.shape[-1]) < valid).long()[None])
      return _np(model(input_ids=torch.from_numpy(ids), **kw).logits[0])

  return Reference(encode=encode, logits=logits, audio_ids={"pad": model.config.audio_token_index})


def build(flag: str, path: str) -> Reference:
  """The reference for a source checkpoint in format `flag`."""
  from conversion import hf_configs  # pylint: disable=import-outside-toplevel
  if flag == "hf-whisper":
    return whisper_from_hf(path)
  if flag == "hf-qwen2-audio":
    return qwen2_audio(path)
  source = TensorSource(path)
  if flag == "openai-whisper":
    return whisper_from_openai(source)
  raw = hf_configs.read_config_json(path)
  if flag == "hf-qwen":
    return qwen_v1(source, raw)
  if flag == "hf-qwen-audio":
    return qwen_audio_v1(source, raw)
  raise ConversionError(f"no reference for --source={flag}")
