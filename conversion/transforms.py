"""Named per-tensor transforms between PyTorch layout and the Flax parameter tree.

Each transform has `forward(x, cfg) -> tuple of arrays` (PyTorch -> params, one array per target
path of a rule) and `backward(parts, cfg) -> array` (params -> PyTorch). Both only re-arrange data
(transpose / slice / concatenate), so a round trip is bit-exact. Name maps refer to them by name.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from qwen_audio_jax.model.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class Transform:
  forward: Callable[[np.ndarray, ModelConfig], tuple[np.ndarray, ...]]
  backward: Callable[[tuple[np.ndarray, ...], ModelConfig], np.ndarray]


def _qkv_sizes(cfg: ModelConfig) -> tuple[int, int, int]:
  dec = cfg.decoder
  q, kv = dec.n_heads * dec.head_dim, dec.n_kv_heads * dec.head_dim
  return q, kv, kv


def _fused_rows(x: np.ndarray, cfg: ModelConfig) -> np.ndarray:
  """x [q+k+v, ...] unchanged, after checking its row count against the config."""
  q, k, v = _qkv_sizes(cfg)
  if x.shape[0] != q + k + v:
    raise ValueError(f"fused q|k|v has {x.shape[0]} rows, expected {q}+{k}+{v}")
  return x


def _split_rows(x: np.ndarray, cfg: ModelConfig) -> tuple[np.ndarray, ...]:
  q, k, _ = _qkv_sizes(cfg)
  x = _fused_rows(x, cfg)
  return x[:q], x[q:q + k], x[q + k:]


TRANSFORMS: dict[str, Transform] = {
    # Tensors stored the same way on both sides (norms, biases, embeddings, positions).
    "identity": Transform(lambda x, cfg: (x,), lambda p, cfg: p[0]),
    # nn.Linear weight [out, in] <-> Dense kernel [in, out].
    "linear": Transform(lambda x, cfg: (x.T,), lambda p, cfg: p[0].T),
    # nn.Conv1d weight [out, in, k] <-> Conv kernel [k, in, out].
    "conv": Transform(lambda x, cfg: (x.transpose(2, 1, 0),), lambda p, cfg: p[0].transpose(2, 1, 0)),
    # Qwen v1 fused c_attn weight [q+k+v, D] (rows q|k|v) <-> three kernels [D, q], [D, k], [D, v].
    "split_qkv_linear": Transform(
        lambda x, cfg: tuple(part.T for part in _split_rows(x, cfg)),
        lambda p, cfg: np.concatenate([part.T for part in p], axis=0)),
    # Qwen v1 fused c_attn bias [q+k+v] <-> three biases.
    "split_qkv_bias": Transform(_split_rows, lambda p, cfg: np.concatenate(p, axis=0)),
    # The same into the fused layout (DecoderConfig.fused_qkv): weight [3W, D] <-> kernel [D, 3, W],
    # bias [3W] <-> [3, W].
    "fused_qkv_linear": Transform(
        lambda x, cfg: (_fused_rows(x, cfg).T.reshape(x.shape[1], 3, -1),),
        lambda p, cfg: p[0].reshape(p[0].shape[0], -1).T),
    "fused_qkv_bias": Transform(lambda x, cfg: (_fused_rows(x, cfg).reshape(3, -1),),
                                lambda p, cfg: p[0].reshape(-1)),
}


def get(name: str) -> Transform:
  return TRANSFORMS[name]
