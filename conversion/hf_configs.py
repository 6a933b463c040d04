"""Source configs (config.json / openai dims) <-> ModelConfig, and detection of a checkpoint's format.

The ModelConfig is derived from the source's own config (never from a preset name). Export writes the
source's config back when it has one (lossless), otherwise builds one from the ModelConfig.
"""

from __future__ import annotations

import json
import os
from typing import Any

from conversion.errors import ConversionError
from qwen_audio_jax.model.config import DecoderConfig, EncoderConfig, ModelConfig, WhisperDecoderConfig

SOURCES = ("openai-whisper", "hf-whisper", "hf-qwen", "hf-qwen-audio", "hf-qwen2-audio")
V1_AUDIO_PAD_ID = 151851  # `[[[AUDIO:modality]]]` (spec §4.2)


def read_config_json(path: str) -> dict[str, Any]:
  cpath = os.path.join(path, "config.json")
  if not os.path.isfile(cpath):
    raise ConversionError(f"{path}: no config.json")
  try:
    with open(cpath) as f:
      return json.load(f)
  except ValueError as e:
    raise ConversionError(f"{cpath}: not valid json ({e})")


def detect_source(path: str, dims: Any = None) -> tuple[str | None, str]:
  """(format, reason) guessed from the files; (None, reason) when it cannot tell."""
  if os.path.isfile(path):
    if path.endswith((".pt", ".pth")):
      return ("openai-whisper", "a .pt file with 'dims'") if dims is not None else (None, "a .pt without 'dims'")
    return None, "a single weight file"
  if not os.path.isfile(os.path.join(path, "config.json")):
    return None, "no config.json"
  cfg = read_config_json(path)
  model_type = cfg.get("model_type")
  if model_type == "whisper":
    return "hf-whisper", "config.json model_type 'whisper'"
  if model_type == "qwen2_audio":
    return "hf-qwen2-audio", "config.json model_type 'qwen2_audio'"
  if model_type == "qwen" or "kv_channels" in cfg:
    return ("hf-qwen-audio", "config.json has an 'audio' block") if "audio" in cfg else \
        ("hf-qwen", "config.json is a QWenConfig without 'audio'")
  return None, f"config.json model_type {model_type!r}"


def check_source_flag(flag: str, path: str, dims: Any = None) -> None:
  if flag not in SOURCES:
    raise ConversionError(f"unknown --source={flag}; known: {', '.join(SOURCES)}")
  detected, reason = detect_source(path, dims)
  if detected is not None and detected != flag:
    raise ConversionError(f"wrong --source={flag}: {path} looks like {detected} ({reason})")


def _need(cfg: dict, key: str, where: str):
  if key not in cfg:
    raise ConversionError(f"{where}: missing key {key!r}")
  return cfg[key]


def _whisper_encoder(d: int, heads: int, layers: int, n_mels: int, n_ctx: int, mlp: int) -> EncoderConfig:
  return EncoderConfig(n_mels=n_mels, n_ctx=n_ctx, d_model=d, n_heads=heads, n_layers=layers, mlp_dim=mlp,
                       pool=False)


def _whisper(enc: EncoderConfig, text: WhisperDecoderConfig, where: str) -> ModelConfig:
  if text.d_model != enc.d_model:
    raise ConversionError(f"{where}: text decoder width {text.d_model} != encoder width {enc.d_model} "
                          "(cross-attention needs them equal)")
  if text.d_model % text.n_heads:
    raise ConversionError(f"{where}: text decoder width {text.d_model} is not divisible by {text.n_heads} heads")
  return ModelConfig(family="whisper", encoder=enc, decoder=None, text_decoder=text, audio_bos_eos=False)


def whisper_from_dims(dims: dict, where: str) -> ModelConfig:
  enc = _whisper_encoder(_need(dims, "n_audio_state", where), _need(dims, "n_audio_head", where),
                         _need(dims, "n_audio_layer", where), _need(dims, "n_mels", where),
                         _need(dims, "n_audio_ctx", where), 4 * dims["n_audio_state"])
  width = _need(dims, "n_text_state", where)
  text = WhisperDecoderConfig(vocab_size=_need(dims, "n_vocab", where), n_ctx=_need(dims, "n_text_ctx", where),
                              d_model=width, n_heads=_need(dims, "n_text_head", where),
                              n_layers=_need(dims, "n_text_layer", where), mlp_dim=4 * width)
  return _whisper(enc, text, where)


def whisper_from_hf(c: dict, where: str) -> ModelConfig:
  if (c.get("activation_function", "gelu") != "gelu" or c.get("scale_embedding", False)
      or not c.get("tie_word_embeddings", True)):
    raise ConversionError(f"{where}: unsupported Whisper variant (activation_function="
                          f"{c.get('activation_function')!r}, scale_embedding={c.get('scale_embedding')}, "
                          f"tie_word_embeddings={c.get('tie_word_embeddings')})")
  d = _need(c, "d_model", where)
  enc = _whisper_encoder(d, _need(c, "encoder_attention_heads", where), _need(c, "encoder_layers", where),
                         c.get("num_mel_bins", 80), c.get("max_source_positions", 1500),
                         _need(c, "encoder_ffn_dim", where))
  text = WhisperDecoderConfig(vocab_size=_need(c, "vocab_size", where), n_ctx=c.get("max_target_positions", 448),
                              d_model=d, n_heads=_need(c, "decoder_attention_heads", where),
                              n_layers=_need(c, "decoder_layers", where), mlp_dim=_need(c, "decoder_ffn_dim", where))
  return _whisper(enc, text, where)


def qwen_v1_decoder(c: dict, where: str) -> DecoderConfig:
  if c.get("rotary_pct", 1.0) != 1.0:
    raise ConversionError(f"{where}: rotary_pct={c['rotary_pct']} is not supported (only 1.0)")
  hidden, heads = _need(c, "hidden_size", where), _need(c, "num_attention_heads", where)
  return DecoderConfig(
      vocab_size=_need(c, "vocab_size", where), d_model=hidden, n_layers=_need(c, "num_hidden_layers", where),
      n_heads=heads, n_kv_heads=heads, head_dim=c.get("kv_channels", hidden // heads),
      mlp_dim=_need(c, "intermediate_size", where) // 2, rms_eps=c.get("layer_norm_epsilon", 1e-6),
      rope_base=float(c.get("rotary_emb_base", 10000)), seq_length=c.get("seq_length", 2048),
      dynamic_ntk=c.get("use_dynamic_ntk", True), logn_attn=c.get("use_logn_attn", True), qkv_bias=True)


def qwen_audio_from_hf(c: dict, where: str) -> ModelConfig:
  dec = qwen_v1_decoder(c, where)
  a = _need(c, "audio", where)
  w = f"{where} 'audio'"
  if a.get("output_dim", dec.d_model) != dec.d_model:
    raise ConversionError(f"{w}: output_dim {a['output_dim']} != hidden_size {dec.d_model}")
  enc = EncoderConfig(n_mels=_need(a, "n_mels", w), n_ctx=_need(a, "n_ctx", w), d_model=_need(a, "n_state", w),
                      n_heads=_need(a, "n_head", w), n_layers=_need(a, "n_layer", w),
                      mlp_dim=4 * a["n_state"], pool=a.get("avg_pool", True), padding="crop")
  start = a.get("audio_start_id", 155163)
  return ModelConfig(family="qwen-audio", encoder=enc, decoder=dec, audio_start_id=start,
                     audio_end_id=start + 1, audio_pad_id=V1_AUDIO_PAD_ID,
                     audio_bos_eos=a.get("add_audio_bos_eos_token", True))


def qwen2_audio_from_hf(path: str) -> ModelConfig:
  """Uses transformers' config class so that keys the hub file omits get their defaults."""
  from transformers import Qwen2AudioConfig  # pylint: disable=import-outside-toplevel
  c = Qwen2AudioConfig.from_pretrained(path)
  a, t = c.audio_config, c.text_config
  rope = getattr(t, "rope_parameters", None) or {}
  if rope.get("rope_type", "default") != "default":
    raise ConversionError(f"{path}: text_config rope_type {rope.get('rope_type')!r} is not supported")
  if getattr(t, "tie_word_embeddings", False) or getattr(c, "tie_word_embeddings", False):
    raise ConversionError(f"{path}: tied input/output embeddings are not supported")
  enc = EncoderConfig(n_mels=a.num_mel_bins, n_ctx=a.max_source_positions, d_model=a.d_model,
                      n_heads=a.encoder_attention_heads, n_layers=a.encoder_layers, mlp_dim=a.encoder_ffn_dim,
                      pool=True, padding="mask")
  head_dim = getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads
  dec = DecoderConfig(vocab_size=t.vocab_size, d_model=t.hidden_size, n_layers=t.num_hidden_layers,
                      n_heads=t.num_attention_heads, n_kv_heads=t.num_key_value_heads, head_dim=head_dim,
                      mlp_dim=t.intermediate_size, rms_eps=t.rms_norm_eps,
                      rope_base=float(rope.get("rope_theta", getattr(t, "rope_theta", 10000.0))),
                      dynamic_ntk=False, logn_attn=False, qkv_bias=True)
  return ModelConfig(family="qwen2-audio", encoder=enc, decoder=dec, audio_start_id=151647, audio_end_id=151648,
                     audio_pad_id=c.audio_token_index, audio_bos_eos=False)


def source_config(flag: str, path: str, dims: Any) -> tuple[ModelConfig, dict[str, Any]]:
  """(ModelConfig, the source's own config: openai dims or config.json) for `--source=flag`."""
  if flag == "openai-whisper":
    if dims is None:
      raise ConversionError(f"{path}: no 'dims' entry; not an openai-whisper checkpoint")
    return whisper_from_dims(dict(dims), f"{path} dims"), {"dims": dict(dims)}
  raw = read_config_json(path)
  where = os.path.join(path, "config.json")
  if flag == "hf-whisper":
    return whisper_from_hf(raw, where), raw
  if flag == "hf-qwen":
    dec = qwen_v1_decoder(raw, where)
    return ModelConfig(family="qwen", encoder=None, decoder=dec, audio_bos_eos=False), raw
  if flag == "hf-qwen-audio":
    return qwen_audio_from_hf(raw, where), raw
  return qwen2_audio_from_hf(path), raw


# ------------------------------------------------------------------------------------------------
# Export: the target's config (the source's own when it was this format, else built from ModelConfig)
# ------------------------------------------------------------------------------------------------


def whisper_dims_from_hf(c: dict) -> dict:
  return dict(n_mels=c["num_mel_bins"], n_vocab=c["vocab_size"], n_audio_ctx=c["max_source_positions"],
              n_audio_state=c["d_model"], n_audio_head=c["encoder_attention_heads"], n_audio_layer=c["encoder_layers"],
              n_text_ctx=c["max_target_positions"], n_text_state=c["d_model"],
              n_text_head=c["decoder_attention_heads"], n_text_layer=c["decoder_layers"])


def whisper_hf_from_dims(d: dict) -> dict:
  """WhisperConfig for openai dims. Special-token ids: WhisperConfig's (multilingual) defaults, or the
  last id for a vocabulary too small to hold them; a generation_config.json is not produced."""
  from transformers import WhisperConfig  # pylint: disable=import-outside-toplevel
  last = d["n_vocab"] - 1
  ids = {} if d["n_vocab"] > 50258 else dict(pad_token_id=last, bos_token_id=last, eos_token_id=last,
                                             decoder_start_token_id=last)
  cfg = WhisperConfig(
      vocab_size=d["n_vocab"], num_mel_bins=d["n_mels"], d_model=d["n_audio_state"],
      encoder_layers=d["n_audio_layer"], encoder_attention_heads=d["n_audio_head"],
      encoder_ffn_dim=4 * d["n_audio_state"], decoder_layers=d["n_text_layer"],
      decoder_attention_heads=d["n_text_head"], decoder_ffn_dim=4 * d["n_text_state"],
      max_source_positions=d["n_audio_ctx"], max_target_positions=d["n_text_ctx"], **ids)
  out = cfg.to_dict()
  out["architectures"] = ["WhisperForConditionalGeneration"]
  return out


def qwen_v1_json(cfg: ModelConfig, base: dict | None) -> dict:
  dec = cfg.decoder
  out = dict(base or {"architectures": ["QWenLMHeadModel"], "model_type": "qwen", "rotary_pct": 1.0,
                      "no_bias": True, "tie_word_embeddings": False, "max_position_embeddings": 8192})
  out.update(hidden_size=dec.d_model, num_attention_heads=dec.n_heads, num_hidden_layers=dec.n_layers,
             kv_channels=dec.head_dim, intermediate_size=2 * dec.mlp_dim, vocab_size=dec.vocab_size,
             layer_norm_epsilon=dec.rms_eps, rotary_emb_base=dec.rope_base, seq_length=dec.seq_length,
             use_dynamic_ntk=dec.dynamic_ntk, use_logn_attn=dec.logn_attn)
  if cfg.family == "qwen-audio":
    enc = cfg.encoder
    out["audio"] = {**out.get("audio", {}), "n_mels": enc.n_mels, "n_ctx": enc.n_ctx, "n_state": enc.d_model,
                    "n_head": enc.n_heads, "n_layer": enc.n_layers, "output_dim": dec.d_model,
                    "avg_pool": enc.pool, "add_audio_bos_eos_token": cfg.audio_bos_eos,
                    "audio_start_id": cfg.audio_start_id}
  else:
    out.pop("audio", None)
  return out


def qwen2_audio_json(cfg: ModelConfig) -> dict:
  from transformers import Qwen2AudioConfig  # pylint: disable=import-outside-toplevel
  enc, dec = cfg.encoder, cfg.decoder
  c = Qwen2AudioConfig(
      audio_config=dict(num_mel_bins=enc.n_mels, encoder_layers=enc.n_layers, encoder_attention_heads=enc.n_heads,
                        encoder_ffn_dim=enc.mlp_dim, d_model=enc.d_model, max_source_positions=enc.n_ctx),
      text_config=dict(model_type="qwen2", vocab_size=dec.vocab_size, hidden_size=dec.d_model,
                       intermediate_size=dec.mlp_dim, num_hidden_layers=dec.n_layers,
                       num_attention_heads=dec.n_heads, num_key_value_heads=dec.n_kv_heads, head_dim=dec.head_dim,
                       rms_norm_eps=dec.rms_eps, rope_theta=dec.rope_base, tie_word_embeddings=False),
      audio_token_index=cfg.audio_pad_id)
  out = c.to_dict()
  out["architectures"] = ["Qwen2AudioForConditionalGeneration"]
  return out


def target_config(target: str, cfg: ModelConfig, sources: list[dict]) -> dict:
  """config.json (or openai dims) for exporting `cfg` as `target`; `sources` from metadata.json."""
  raw = {s["format"]: s["config"] for s in sources}
  if target == "openai-whisper":
    return raw["openai-whisper"]["dims"] if "openai-whisper" in raw else whisper_dims_from_hf(raw["hf-whisper"])
  if target == "hf-whisper":
    return raw["hf-whisper"] if "hf-whisper" in raw else whisper_hf_from_dims(raw["openai-whisper"]["dims"])
  if target in ("hf-qwen", "hf-qwen-audio"):
    return qwen_v1_json(cfg, raw.get(target, raw.get("hf-qwen-audio", raw.get("hf-qwen"))))
  return raw["hf-qwen2-audio"] if "hf-qwen2-audio" in raw else qwen2_audio_json(cfg)
