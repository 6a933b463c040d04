"""The top-level model: audio encoder + projector + LLM, selected by `cfg.family`.

Families: "whisper" -> audio_encoder (use `encode_audio`) and, when `cfg.text_decoder` is set, Whisper's
own text decoder (`text_decoder`; decode with `model/whisper_decode.py`); "qwen" -> decoder only;
"qwen-audio" and "qwen2-audio" -> audio_encoder, audio_projector, decoder (+ audio_bos_eos for Qwen-Audio v1).

Inputs of `Model.__call__`:
* input_ids [B, S] int: token ids, LEFT-padded. Each audio occupies n_i = pooled_frames(T_i) placeholder
  ids (cfg.audio_pad_id), pre-expanded by the prompt builder; Qwen-Audio v1 spans are
  `<audio>` + n_i placeholders + `</audio>` (the tags get the learned audio bos/eos rows), Qwen2-Audio
  spans are `<|audio_bos|>` + n_i `<|AUDIO|>` + `<|audio_eos|>` (ordinary token embeddings).
* attention_mask [B, S]: 1 for tokens, 0 for padding.
* audio_mel [N, n_mels, F] float | None: log-mel of every audio in the batch, ordered row-major by where
  their placeholders occur (several audios per sample allowed); F is any static length <= 2 * n_ctx
  (the 30 s window is 3000 frames).
* audio_lengths [N] int | None: T_i, encoder frames of audio i (`audio.lengths.encoder_frames(mel_frames)`);
  None = every clip fills the F-frame window.
* positions [B, S] | None: RoPE positions; default cumsum(attention_mask) - 1 (continuing from the cache).
* cache: a `KVCache` (see kv_cache.py) for prefill / one-token decode steps, or None.
* train: disables Qwen v1's dynamic NTK and logn (training mode of the reference).
* output: "logits" (fp32 [B, S, V]), "last_logits" (fp32 [B, V], the last column only) or "hidden"
  (final-normed hidden states [B, S, D]; `Model.project` turns them into logits where needed). V is
  always `decoder.vocab_size`: padded vocabulary rows (`vocab_pad_to`) never appear in an output.
Returns that output, or (output, new_cache) when a cache is given.

Outside jit (concrete inputs) the call first runs `check_audio_placeholders`, which raises one clear
line when input_ids and the audio inputs disagree; `forward` is the jitted public entry point that runs
that check on the host before compiling.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from qwen_audio_jax.audio import lengths as audio_lengths_lib
from qwen_audio_jax.model.audio_encoder import AudioEncoder
from qwen_audio_jax.model.config import ModelConfig
from qwen_audio_jax.model.decoder import Decoder
from qwen_audio_jax.model.kv_cache import KVCache
from qwen_audio_jax.model import mowe as mowe_lib, petl
from qwen_audio_jax.model.layers import Linear, embedding
from qwen_audio_jax.model.splice import (check_audio_placeholders, features_per_audio, overwrite_tags,
                                         splice_audio)
from qwen_audio_jax.model.whisper_decoder import WhisperDecoder

_AUDIO_LLM = ("qwen-audio", "qwen2-audio")
_FAMILIES = ("whisper", "qwen") + _AUDIO_LLM


def check_config(cfg: ModelConfig) -> None:
  """The towers a family needs must be configured."""
  if cfg.family not in _FAMILIES:
    raise ValueError(f"ModelConfig.family must be one of {_FAMILIES}, got {cfg.family!r}")
  if cfg.family != "qwen" and cfg.encoder is None:
    raise ValueError(f"ModelConfig: family {cfg.family!r} needs an encoder config (encoder is None)")
  if cfg.family != "whisper" and cfg.decoder is None:
    raise ValueError(f"ModelConfig: family {cfg.family!r} needs a decoder config (decoder is None)")
  text = cfg.text_decoder
  if text is not None:
    if cfg.family != "whisper":
      raise ValueError(f"ModelConfig: text_decoder (Whisper's) is for family 'whisper', not {cfg.family!r}")
    if text.d_model != cfg.encoder.d_model or text.d_model % text.n_heads:
      raise ValueError(f"ModelConfig.text_decoder: d_model {text.d_model} must equal the encoder's "
                       f"{cfg.encoder.d_model} and be divisible by n_heads {text.n_heads}")
  mowe_lib.check(cfg)
  if cfg.encoder_petl is not None and cfg.encoder is not None:
    petl.adapted_sublayers(cfg)
    if cfg.encoder_petl.adapter_reduction:
      petl.adapter_width(cfg.encoder.d_model, cfg.encoder_petl)
    if cfg.encoder_petl.prompt_tokens < 0:
      raise ValueError(f"ModelConfig.encoder_petl.prompt_tokens must be >= 0, got {cfg.encoder_petl.prompt_tokens}")


def _is_concrete(x) -> bool:
  return x is not None and not isinstance(x, jax.core.Tracer)


def check_cache_room(cache: KVCache | None, seq_len: int) -> None:
  """A full cache would be overwritten silently under jit; outside jit this raises instead."""
  if cache is not None and _is_concrete(cache.index) and int(cache.index) + seq_len > cache.max_length:
    raise ValueError(f"KVCache full: {int(cache.index)} tokens cached + {seq_len} new > max_length "
                     f"{cache.max_length}; allocate a larger cache with init_cache")


class Model(nn.Module):
  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    check_config(cfg)
    if cfg.family != "qwen":
      self.audio_encoder = AudioEncoder(cfg.tower("encoder"))
    if cfg.family in _AUDIO_LLM:
      self.audio_projector = Linear(cfg.decoder.d_model, ("audio_embed", "embed"), cfg)
      if mowe_lib.enabled(cfg):
        self.mowe = mowe_lib.Mowe(cfg)
      if cfg.audio_bos_eos:
        self.audio_bos_eos = embedding(cfg, 2, cfg.decoder.d_model, ("norm", "embed"))
    if cfg.family != "whisper":
      self.decoder = Decoder(cfg.tower("decoder"))
    if cfg.text_decoder is not None:
      self.text_decoder = WhisperDecoder(cfg.tower("decoder"))

  def encode_audio(self, mel: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
    """mel [N, n_mels, F] (+ T per clip) -> [N, frames, d]: encoder output, projected for audio LLMs
    (plus the routed weak-encoder embeddings when `cfg.mowe` is set, model/mowe.py)."""
    features = self.audio_encoder(mel, lengths)
    if self.cfg.family not in _AUDIO_LLM:
      return features
    x = self.audio_projector(features)
    if mowe_lib.enabled(self.cfg):
      n_valid = None if lengths is None else features_per_audio(jnp.asarray(lengths, jnp.int32), self.cfg)
      x = x + self.mowe(features, mel, lengths, n_valid).astype(x.dtype)
    return x

  def __call__(self, input_ids, attention_mask=None, audio_mel=None, audio_lengths=None, positions=None,
               cache: KVCache | None = None, train: bool = False, output: str = "logits"):
    cfg = self.cfg
    if cfg.family == "whisper":
      raise ValueError("Model: family 'whisper' has no LLM; call encode_audio(mel) or use model/whisper_decode.py")
    if attention_mask is None:
      attention_mask = jnp.ones(input_ids.shape, jnp.int32)
    if audio_mel is not None and cfg.family not in _AUDIO_LLM:
      raise ValueError(f"Model: family {cfg.family!r} takes no audio")
    if audio_mel is not None and audio_lengths is None:
      t_full = audio_lengths_lib.encoder_frames(audio_mel.shape[-1])
      audio_lengths = jnp.full((audio_mel.shape[0],), t_full, jnp.int32)
    check_cache_room(cache, input_ids.shape[1])
    checkable = _is_concrete(input_ids) and (audio_lengths is None or _is_concrete(audio_lengths))
    if checkable and (audio_mel is not None or cache is None) and cfg.family in _AUDIO_LLM:
      check_audio_placeholders(input_ids, audio_lengths if audio_mel is not None else None, cfg,
                               None if audio_mel is None else audio_mel.shape[-1])

    h = self.decoder.embed_tokens(input_ids)
    if audio_mel is not None:
      lengths = jnp.asarray(audio_lengths, jnp.int32)
      features = self.encode_audio(audio_mel, lengths)
      h = splice_audio(h, input_ids, features, features_per_audio(lengths, cfg), cfg.audio_pad_id)
      if cfg.audio_bos_eos:
        h = overwrite_tags(h, input_ids, self.audio_bos_eos.embedding, cfg.audio_start_id, cfg.audio_end_id)
    out, new_cache = self.decoder(h, attention_mask, positions, cache, train, output)
    return out if cache is None else (out, new_cache)

  def project(self, h: jax.Array) -> jax.Array:
    """Final-normed decoder hidden states -> fp32 logits (use with output="hidden"); see Decoder.project."""
    return self.decoder.project(h)

  def init_all(self, mel: jax.Array | None, input_ids: jax.Array | None):
    """Touches every submodule once (used by `params.init_params`)."""
    out = []
    if mel is not None:
      out.append(self.encode_audio(mel))
      if self.cfg.family in _AUDIO_LLM and self.cfg.audio_bos_eos:
        out.append(self.audio_bos_eos.embedding)
      if self.cfg.text_decoder is not None:
        out.append(self.text_decoder(jnp.zeros((mel.shape[0], 2), jnp.int32), out[0])[0])
    if input_ids is not None:
      h = self.decoder.embed_tokens(input_ids)
      out.append(self.decoder(h, jnp.ones(input_ids.shape, jnp.int32))[0])
    return out


@functools.partial(jax.jit, static_argnames=("cfg", "train"))
def _forward_jit(params, cfg, input_ids, attention_mask, audio_mel, audio_lengths, positions, cache, train):
  return Model(cfg).apply({"params": params}, input_ids, attention_mask, audio_mel, audio_lengths, positions,
                          cache, train)


def forward(params, cfg: ModelConfig, input_ids, attention_mask=None, audio_mel=None, audio_lengths=None,
            positions=None, cache: KVCache | None = None, train: bool = False):
  """Public entry point: host-side input checks, then the jitted model (one compile per shape/cfg)."""
  check_config(cfg)
  check_cache_room(cache, jnp.shape(input_ids)[1])
  if cfg.family in _AUDIO_LLM and (audio_mel is not None or cache is None):
    lengths = audio_lengths
    if audio_mel is not None and lengths is None:
      lengths = [audio_lengths_lib.encoder_frames(audio_mel.shape[-1])] * audio_mel.shape[0]
    check_audio_placeholders(input_ids, lengths if audio_mel is not None else None, cfg,
                             None if audio_mel is None else audio_mel.shape[-1])
  if attention_mask is None:
    attention_mask = jnp.ones(jnp.shape(input_ids), jnp.int32)
  return _forward_jit(params, cfg, input_ids, attention_mask, audio_mel, audio_lengths, positions, cache, train)
