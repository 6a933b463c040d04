"""Whisper-style audio encoder (spec §2; §8 for Qwen2-Audio).

conv1 -> GELU -> conv2 (stride 2) -> GELU -> + positions -> scanned pre-LN blocks -> [AvgPool(2, 2)] -> ln_post.
With `cfg.encoder.pool=False` this is exactly Whisper's encoder (any size tiny .. large-v3).

Padding (`lengths` = T_b, encoder frames after conv2 per clip, from `audio/lengths.py`):
* "crop" (Qwen-Audio v1): each clip gives exactly its single-clip result, i.e. the reference with the
  mel cropped to 2*T_b. The reference crops a batch to 2*max_b T_b, so there a shorter clip's last frame
  sees real padded-mel values (batch-dependent, spec §9.2); here mel frames >= 2*T_b are zeroed per clip
  before conv1, padded frames are zeroed after adding positions and padded keys are masked. Any static
  mel length F >= 2*max T therefore gives the same per-clip outputs.
* "mask" (Qwen2-Audio, transformers' Qwen2AudioEncoder): the full window is encoded and only padded keys
  are masked.
Without `lengths` nothing is masked.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from qwen_audio_jax.model import petl
from qwen_audio_jax.model.attention import EncoderAttention
from qwen_audio_jax.model.config import ModelConfig
from qwen_audio_jax.model.layers import (GeluMlp, LayerNorm, compute_dtype, constrain, matmul_precision,
                                         param_dtype, partitioned, remat, scan_layers)


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
  """Whisper's positional table [length, channels]: sines in the first half, cosines in the second."""
  inc = np.log(max_timescale) / (channels // 2 - 1)
  inv = np.exp(-inc * np.arange(channels // 2, dtype=np.float32))
  t = np.arange(length, dtype=np.float32)[:, None] * inv[None, :]
  return np.concatenate([np.sin(t), np.cos(t)], axis=1).astype(np.float32)


def _sinusoid_init(key, shape, dtype=jnp.float32):
  del key
  return jnp.asarray(sinusoids(*shape), dtype)


class EncoderLayer(nn.Module):
  """x + Attn(LN(x)); x + MLP(LN(x)). Returns (x, None) for nn.scan."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, lengths):
    eps = self.cfg.encoder.ln_eps
    adapters = petl.adapters(self.cfg)  # empty unless cfg.encoder_petl asks for bottleneck adapters
    x = constrain(x)
    u = LayerNorm(self.cfg, eps, name="attn_ln")(x)
    x = x + petl.adapt(self.cfg, EncoderAttention(self.cfg, name="attn")(u, lengths), u, adapters.get("attn"))
    u = LayerNorm(self.cfg, eps, name="mlp_ln")(x)
    x = x + petl.adapt(self.cfg, GeluMlp(self.cfg, self.cfg.encoder.mlp_dim, name="mlp")(u), u, adapters.get("mlp"))
    return constrain(x), None


class AudioEncoder(nn.Module):
  """mel [N, n_mels, F] (+ lengths [N]) -> [N, T or T // 2, d_model] (T = (F - 1) // 2 + 1)."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, mel: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
    ecfg = self.cfg.encoder
    if mel.ndim != 3 or mel.shape[1] != ecfg.n_mels:
      raise ValueError(f"audio_encoder: mel must be [N, n_mels={ecfg.n_mels}, frames], got shape {mel.shape}")
    dtype = compute_dtype(self.cfg)
    x = jnp.transpose(mel, (0, 2, 1)).astype(dtype)  # NWC
    frames = x.shape[1]
    if lengths is not None:
      lengths = jnp.asarray(lengths, jnp.int32)
      if ecfg.padding == "crop":
        keep = jnp.arange(frames)[None, :] < 2 * lengths[:, None]
        x = jnp.where(keep[:, :, None], x, 0).astype(dtype)
    x = jax.nn.gelu(self._conv("conv1", ("conv_width", "mel", "embed"), 1)(x), approximate=False)
    x = jax.nn.gelu(self._conv("conv2", ("conv_width", "conv_in", "embed"), 2)(x), approximate=False)
    t = x.shape[1]
    if t > ecfg.n_ctx:
      raise ValueError(f"audio_encoder: {frames} mel frames give {t} encoder frames > n_ctx={ecfg.n_ctx} "
                       f"(at most {2 * ecfg.n_ctx} mel frames, i.e. 30 s)")
    positions = self.param("embed_positions", partitioned(_sinusoid_init, ("positions", "embed")),
                           (ecfg.n_ctx, ecfg.d_model), param_dtype(self.cfg))
    x = x + jax.lax.stop_gradient(positions[:t]).astype(dtype)
    if lengths is not None and ecfg.padding == "crop":
      valid = jnp.arange(t)[None, :] < lengths[:, None]  # [N, T]
      x = jnp.where(valid[:, :, None], x, 0).astype(dtype)
    x, key_lengths = petl.prepend_prompts(self, self.cfg, x, lengths)
    layers = scan_layers(remat(EncoderLayer, self.cfg.remat_policy), ecfg.n_layers, in_axes=(nn.broadcast,))
    x, _ = layers(self.cfg, name="layers")(x, key_lengths)  # keys past each clip's prompts + length are hidden
    x = x[:, petl.prompt_tokens(self.cfg):]  # prompts are dropped: the frame count is unchanged
    if ecfg.pool:  # AvgPool1d(2, 2): an odd last frame is dropped
      pooled = t // 2
      x = jnp.mean(x[:, :2 * pooled].astype(jnp.float32).reshape(x.shape[0], pooled, 2, -1), axis=2)
    return LayerNorm(self.cfg, ecfg.ln_eps, name="ln_post")(x)

  def _conv(self, name: str, axes: tuple[str, str, str], stride: int) -> nn.Conv:
    return nn.Conv(self.cfg.encoder.d_model, kernel_size=(3,), strides=(stride,), padding=((1, 1),),
                   dtype=compute_dtype(self.cfg), param_dtype=param_dtype(self.cfg),
                   precision=matmul_precision(self.cfg),
                   kernel_init=partitioned(nn.initializers.lecun_normal(), axes),
                   bias_init=partitioned(nn.initializers.zeros_init(), ("embed",)), name=name)
