"""Tiny random PyTorch checkpoints in every supported source format (tests, and trying the CLIs).

The openai / Qwen-7B / Qwen-Audio namings are produced here by explicit renames of transformers models
(written from the spec, independently of conversion/maps), so a map bug cannot cancel itself out.
Each builder returns the in-memory transformers model the files were made from (the reference).
"""

from __future__ import annotations

import base64
import json
import os
import re

import torch
import transformers
from safetensors.torch import save_file

D, HEADS, LAYERS, FFN = 64, 4, 2, 256  # audio encoder
N_CTX = 1500  # full 30 s window, like the real models


def randomize(module: torch.nn.Module, seed: int, std: float = 0.08) -> torch.nn.Module:
  """Every weight gets noise (norm scales around 1, biases non-zero) so no mapping error hides.

  `std` of the non-norm weights; generation tests use a larger one so greedy outputs vary.
  """
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in module.named_parameters():
      is_scale = "norm" in name and name.endswith("weight")
      p.copy_((1.0 if is_scale else 0.0) + (0.3 if is_scale else std) * torch.randn(p.shape, generator=gen))
  return module.eval()


def _clone(sd: dict) -> dict:
  return {k: v.detach().clone().contiguous() for k, v in sd.items()}


# ------------------------------------------------------------------------------------------------
# Whisper
# ------------------------------------------------------------------------------------------------


def whisper_config(n_mels: int = 80) -> transformers.WhisperConfig:
  return transformers.WhisperConfig(
      vocab_size=96, num_mel_bins=n_mels, d_model=D, encoder_layers=LAYERS, encoder_attention_heads=HEADS,
      encoder_ffn_dim=FFN, decoder_layers=1, decoder_attention_heads=HEADS, decoder_ffn_dim=FFN,
      max_source_positions=N_CTX, max_target_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=2,
      decoder_start_token_id=3, suppress_tokens=[], begin_suppress_tokens=[])


def hf_whisper(directory: str, seed: int = 0) -> transformers.WhisperForConditionalGeneration:
  model = randomize(transformers.WhisperForConditionalGeneration(whisper_config()), seed)
  model.save_pretrained(directory)
  return model


def whisper_vocab(directory: str, n_languages: int = 99, size: int = 600,
                  time_tokens: bool = True) -> tuple[str, str, int]:
  """A small Whisper-style vocabulary: a byte-level BPE of `size` tokens trained on the seed texts, then
  Whisper's specials in openai's order (time tokens not special, as in transformers' files; left out of
  tokenizer.json with time_tokens=False, as in older exports). Writes tokenizer.json and vocab.tiktoken
  (the same ranks); returns (their paths, number of BPE ranks)."""
  import tokenizers  # pylint: disable=import-outside-toplevel
  from transformers.convert_slow_tokenizer import bytes_to_unicode  # pylint: disable=import-outside-toplevel
  from qwen_audio_jax.tokenizer import SEED_TEXTS, whisper_specials  # pylint: disable=import-outside-toplevel
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  symbols = [" (laughs) [music] - 'quoted' <<>> ♪♪ \"says\" (( ))"] * 20  # " (", " -", " '" become tokens
  tok.train_from_iterator(list(SEED_TEXTS) * 3 + symbols, tokenizers.trainers.BpeTrainer(
      vocab_size=size, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
  to_byte = {c: b for b, c in bytes_to_unicode().items()}
  ranks = {bytes(to_byte[c] for c in token): i for token, i in tok.get_vocab().items()}
  specials = whisper_specials.openai_specials(n_languages)
  tok.add_tokens([tokenizers.AddedToken(s, special=not whisper_specials.TIMESTAMP_RE.fullmatch(s), normalized=False)
                  for s in (specials if time_tokens else specials[:-whisper_specials.N_TIMESTAMPS])])
  os.makedirs(directory, exist_ok=True)
  json_path, tiktoken_path = os.path.join(directory, "tokenizer.json"), os.path.join(directory, "vocab.tiktoken")
  tok.save(json_path)
  with open(tiktoken_path, "wb") as f:
    f.writelines(base64.b64encode(t) + b" %d\n" % r for t, r in sorted(ranks.items(), key=lambda x: x[1]))
  return json_path, tiktoken_path, len(ranks)


# transformers -> openai names (spec §2.7, inverse of convert_openai_to_hf's WHISPER_MAPPING).
_TO_OPENAI = (
    (r"^model\.", ""), (r"\.layers\.", ".blocks."), (r"\.self_attn\.q_proj\.", ".attn.query."),
    (r"\.self_attn\.k_proj\.", ".attn.key."), (r"\.self_attn\.v_proj\.", ".attn.value."),
    (r"\.self_attn\.out_proj\.", ".attn.out."), (r"\.self_attn_layer_norm\.", ".attn_ln."),
    (r"\.encoder_attn\.q_proj\.", ".cross_attn.query."), (r"\.encoder_attn\.k_proj\.", ".cross_attn.key."),
    (r"\.encoder_attn\.v_proj\.", ".cross_attn.value."), (r"\.encoder_attn\.out_proj\.", ".cross_attn.out."),
    (r"\.encoder_attn_layer_norm\.", ".cross_attn_ln."), (r"\.fc1\.", ".mlp.0."), (r"\.fc2\.", ".mlp.2."),
    (r"\.final_layer_norm\.", ".mlp_ln."), (r"encoder\.layer_norm\.", "encoder.ln_post."),
    (r"decoder\.layer_norm\.", "decoder.ln."), (r"\.embed_positions\.weight$", ".positional_embedding"),
    (r"decoder\.embed_tokens\.", "decoder.token_embedding."),
)


def openai_whisper(path: str, model: transformers.WhisperForConditionalGeneration,
                   dtype: torch.dtype = torch.float16) -> None:
  """An openai-whisper style .pt ({"dims", "model_state_dict"}) from a transformers Whisper model."""
  c = model.config
  state = {}
  for name, t in model.state_dict().items():
    if name == "proj_out.weight":  # tied to the token embedding in openai's model
      continue
    for pattern, repl in _TO_OPENAI:
      name = re.sub(pattern, repl, name)
    state[name] = t.detach().clone().to(dtype)
  dims = dict(n_mels=c.num_mel_bins, n_vocab=c.vocab_size, n_audio_ctx=c.max_source_positions,
              n_audio_state=c.d_model, n_audio_head=c.encoder_attention_heads, n_audio_layer=c.encoder_layers,
              n_text_ctx=c.max_target_positions, n_text_state=c.d_model, n_text_head=c.decoder_attention_heads,
              n_text_layer=c.decoder_layers)
  torch.save({"dims": dims, "model_state_dict": state}, path)


# ------------------------------------------------------------------------------------------------
# Qwen-7B (v1 naming) from a Qwen2ForCausalLM
# ------------------------------------------------------------------------------------------------


def qwen2_text_config(vocab: int, hidden: int = 64, heads: int = 4, inter: int = 160, eps: float = 1e-6) -> dict:
  return dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=LAYERS,
              num_attention_heads=heads, num_key_value_heads=heads, rms_norm_eps=eps, rope_theta=10000.0,
              max_position_embeddings=4096, tie_word_embeddings=False)


def v1_llm_state(sd: dict, prefix: str, lm_head: str, n_layers: int) -> dict:
  """Qwen2 state dict (layers under `prefix`) -> Qwen v1 names (fused c_attn q|k|v; w2 = gate, w1 = up)."""
  out = {"transformer.wte.weight": sd[prefix + "embed_tokens.weight"],
         "transformer.ln_f.weight": sd[prefix + "norm.weight"], "lm_head.weight": sd[lm_head]}
  for i in range(n_layers):
    s, t = f"{prefix}layers.{i}.", f"transformer.h.{i}."
    out[t + "ln_1.weight"] = sd[s + "input_layernorm.weight"]
    for kind in ("weight", "bias"):
      out[t + f"attn.c_attn.{kind}"] = torch.cat([sd[s + f"self_attn.{p}_proj.{kind}"] for p in "qkv"], 0)
    out[t + "attn.c_proj.weight"] = sd[s + "self_attn.o_proj.weight"]
    out[t + "ln_2.weight"] = sd[s + "post_attention_layernorm.weight"]
    out[t + "mlp.w1.weight"] = sd[s + "mlp.up_proj.weight"]
    out[t + "mlp.w2.weight"] = sd[s + "mlp.gate_proj.weight"]
    out[t + "mlp.c_proj.weight"] = sd[s + "mlp.down_proj.weight"]
  return _clone(out)


def qwen_v1_config(text: dict, **extra) -> dict:
  return {"architectures": ["QWenLMHeadModel"], "model_type": "qwen", "hidden_size": text["hidden_size"],
          "num_attention_heads": text["num_attention_heads"], "num_hidden_layers": text["num_hidden_layers"],
          "kv_channels": text["hidden_size"] // text["num_attention_heads"],
          "intermediate_size": 2 * text["intermediate_size"], "vocab_size": text["vocab_size"],
          "layer_norm_epsilon": text["rms_norm_eps"], "rotary_emb_base": text["rope_theta"], "rotary_pct": 1.0,
          "seq_length": 2048, "use_dynamic_ntk": True, "use_logn_attn": True, "no_bias": True,
          "tie_word_embeddings": False, **extra}


def _write_sharded(directory: str, state: dict, n_shards: int, fmt: str) -> None:
  """Shards in name order; `fmt` "safetensors" or "bin"; writes the matching index json."""
  names = sorted(state)
  per = -(-len(names) // n_shards)
  weight_map = {}
  for k in range(n_shards):
    base = "model" if fmt == "safetensors" else "pytorch_model"
    fname = f"{base}-{k + 1:05d}-of-{n_shards:05d}.{fmt}"
    part = {n: state[n] for n in names[k * per:(k + 1) * per]}
    if fmt == "safetensors":
      save_file(part, os.path.join(directory, fname), metadata={"format": "pt"})
    else:
      torch.save(part, os.path.join(directory, fname))
    weight_map.update({n: fname for n in part})
  index = "model.safetensors.index.json" if fmt == "safetensors" else "pytorch_model.bin.index.json"
  with open(os.path.join(directory, index), "w") as f:
    json.dump({"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
               "weight_map": weight_map}, f)


def hf_qwen(directory: str, seed: int = 1, vocab: int = 512) -> transformers.Qwen2ForCausalLM:
  """Qwen-7B-named checkpoint (sharded pytorch_model*.bin + index) made from a tiny Qwen2ForCausalLM."""
  text = qwen2_text_config(vocab)
  model = randomize(transformers.Qwen2ForCausalLM._from_config(  # pylint: disable=protected-access
      transformers.Qwen2Config(**text), attn_implementation="eager"), seed)
  os.makedirs(directory, exist_ok=True)
  _write_sharded(directory, v1_llm_state(model.state_dict(), "model.", "lm_head.weight", LAYERS), 2, "bin")
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(qwen_v1_config(text), f)
  return model


# ------------------------------------------------------------------------------------------------
# Qwen2-Audio (transformers) and Qwen-Audio (v1 naming, made from a Qwen2-Audio model + bos/eos table)
# ------------------------------------------------------------------------------------------------


def qwen2_audio_config(n_mels: int, vocab: int, audio_token: int, hidden: int = 64) -> transformers.Qwen2AudioConfig:
  return transformers.Qwen2AudioConfig(
      audio_config=dict(num_mel_bins=n_mels, encoder_layers=LAYERS, encoder_attention_heads=HEADS,
                        encoder_ffn_dim=FFN, d_model=D, max_source_positions=N_CTX),
      text_config=dict(model_type="qwen2", **qwen2_text_config(vocab, hidden=hidden, eps=1e-5)),
      audio_token_index=audio_token)


def hf_qwen2_audio(directory: str, seed: int = 2, vocab: int = 512,
                   std: float = 0.08) -> transformers.Qwen2AudioForConditionalGeneration:
  cfg = qwen2_audio_config(128, vocab, audio_token=vocab - 12)
  model = randomize(transformers.Qwen2AudioForConditionalGeneration._from_config(  # pylint: disable=protected-access
      cfg, attn_implementation="eager"), seed, std)
  model.save_pretrained(directory)
  return model


_V1_AUDIO = (  # Qwen2AudioEncoder suffix -> v1 `transformer.audio.` suffix
    (r"\.layers\.", ".blocks."), (r"\.self_attn\.q_proj\.", ".attn.query."), (r"\.self_attn\.k_proj\.", ".attn.key."),
    (r"\.self_attn\.v_proj\.", ".attn.value."), (r"\.self_attn\.out_proj\.", ".attn.out."),
    (r"\.self_attn_layer_norm\.", ".attn_ln."), (r"\.fc1\.", ".mlp.0."), (r"\.fc2\.", ".mlp.2."),
    (r"\.final_layer_norm\.", ".mlp_ln."), (r"\.layer_norm\.", ".ln_post."),
    (r"\.embed_positions\.weight$", ".positional_embedding"),
)


def hf_qwen_audio(directory: str, seed: int = 3, vocab: int = 155947, hidden: int = 32):
  """Qwen-Audio layout (transformer.audio.* + v1 LLM), 3 safetensors shards + index.

  Returns (Qwen2AudioForConditionalGeneration with 80 mels — the v1 encoder/projector/LLM without
  bos/eos — and the bos/eos table [2, hidden]). The vocab covers the real audio ids (155163/155164).
  """
  cfg = qwen2_audio_config(80, vocab, audio_token=151851, hidden=hidden)
  model = randomize(transformers.Qwen2AudioForConditionalGeneration._from_config(  # pylint: disable=protected-access
      cfg, attn_implementation="eager"), seed)
  sd = model.state_dict()  # transformers-5 names: model.audio_tower., model.language_model., lm_head.
  state = {}
  for name, t in sd.items():
    if name.startswith("model.audio_tower."):
      new = "." + name.removeprefix("model.audio_tower.")
      for pattern, repl in _V1_AUDIO:
        new = re.sub(pattern, repl, new)
      state["transformer.audio" + new] = t
  state["transformer.audio.proj.weight"] = sd["model.multi_modal_projector.linear.weight"]
  state["transformer.audio.proj.bias"] = sd["model.multi_modal_projector.linear.bias"]
  bos_eos = 0.08 * torch.randn((2, hidden), generator=torch.Generator().manual_seed(seed + 100))
  state["transformer.audio.audio_bos_eos_token.weight"] = bos_eos
  state.update(v1_llm_state(sd, "model.language_model.", "lm_head.weight", LAYERS))
  os.makedirs(directory, exist_ok=True)
  _write_sharded(directory, _clone(state), 3, "safetensors")
  audio = {"n_mels": 80, "n_ctx": N_CTX, "n_state": D, "n_head": HEADS, "n_layer": LAYERS, "output_dim": hidden,
           "avg_pool": True, "add_audio_bos_eos_token": True, "audio_start_id": 155163}
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(qwen_v1_config(cfg.text_config.to_dict() | {"rope_theta": 10000.0}, audio=audio), f)
  return model, bos_eos
