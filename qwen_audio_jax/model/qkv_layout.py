"""The two layouts of the decoder's q/k/v projections (`DecoderConfig.fused_qkv`) and the exact
re-arrangement between them.

Separate: `decoder/layers/attn/{q,k,v}/{kernel,bias}`, kernels [L, D, H*dh] (Qwen2 / transformers).
Fused:    `decoder/layers/attn/qkv/{kernel,bias}`, kernel [L, D, 3, H*dh], bias [L, 3, H*dh] (Qwen v1's
          `c_attn`, rows q|k|v). Both hold the same numbers; `to_layout` only stacks or slices.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from qwen_audio_jax.model.config import ModelConfig

_PARTS = ("q", "k", "v")


def is_fused(params: Mapping[str, Any]) -> bool | None:
  """True/False for a params tree with a Qwen decoder in the fused/separate layout; None without one."""
  attn = params.get("decoder", {}).get("layers", {}).get("attn") if isinstance(params, Mapping) else None
  if not attn:
    return None
  return "qkv" in attn


def fuse(params: Mapping[str, Any]) -> dict:
  """Separate q/k/v -> one `qkv` module (kernel stacked on axis -2, bias on axis -2)."""
  attn = dict(params["decoder"]["layers"]["attn"])
  parts = [attn.pop(p) for p in _PARTS]
  xp = np if isinstance(parts[0]["kernel"], np.ndarray) else jnp
  attn["qkv"] = {name: xp.stack([p[name] for p in parts], axis=-2) for name in parts[0]}
  return _with_attn(params, attn)


def split(params: Mapping[str, Any]) -> dict:
  """One `qkv` module -> separate q/k/v (inverse of `fuse`)."""
  attn = dict(params["decoder"]["layers"]["attn"])
  fused = attn.pop("qkv")
  for i, p in enumerate(_PARTS):
    attn[p] = {name: value[..., i, :] for name, value in fused.items()}
  return _with_attn(params, attn)


def to_layout(params: Mapping[str, Any], cfg: ModelConfig) -> Mapping[str, Any]:
  """`params` in the q/k/v layout `cfg` declares (unchanged when it already is, or has no Qwen decoder)."""
  fused = is_fused(params)
  if fused is None or cfg.decoder is None or fused == cfg.decoder.fused_qkv:
    return params
  return fuse(params) if cfg.decoder.fused_qkv else split(params)


def _with_attn(params: Mapping[str, Any], attn: dict) -> dict:
  out = dict(params)
  out["decoder"] = {**params["decoder"], "layers": {**params["decoder"]["layers"], "attn": attn}}
  return out

