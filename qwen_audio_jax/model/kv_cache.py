"""KV cache for jitted decoding: a fixed-size pytree, written in place with dynamic_update_slice.

Layout: k/v stacked over layers [n_layers, B, n_kv_heads, S_max, head_dim] (the scan axis first, like
the parameters; heads before slots, the layout attention's two matmuls read, so a decode step does not
transpose the cache: in the other order that transpose was ~40% of a CPU decode step), a shared write index (all rows advance together; left padding keeps prompts aligned),
the per-slot key mask (0 for padding and unwritten slots), each row's next RoPE position, and the
dynamic-NTK alpha per row, fixed at prefill as in the reference (spec §3.4).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from qwen_audio_jax.model.config import ModelConfig


@flax.struct.dataclass
class KVCache:
  k: jax.Array  # [L, B, KVH, S_max, Dh]
  v: jax.Array  # [L, B, KVH, S_max, Dh]
  index: jax.Array  # int32 scalar: slots written so far (the next write position)
  kv_mask: jax.Array  # [B, S_max] int32: 1 where a real token was written
  next_pos: jax.Array  # [B] int32: RoPE position of each row's next token (its true length so far)
  ntk_alpha: jax.Array  # [B] float32: dynamic-NTK alpha chosen at prefill (1 when disabled)

  @property
  def max_length(self) -> int:
    return self.k.shape[3]

  def take(self, rows: jax.Array) -> "KVCache":
    """The cache of batch rows `rows` (int [B']), e.g. to expand or reorder beams."""
    return self.replace(k=jnp.take(self.k, rows, axis=1), v=jnp.take(self.v, rows, axis=1),
                        kv_mask=jnp.take(self.kv_mask, rows, axis=0),
                        next_pos=jnp.take(self.next_pos, rows, axis=0),
                        ntk_alpha=jnp.take(self.ntk_alpha, rows, axis=0))


def init_cache(cfg: ModelConfig, batch_size: int, max_length: int, dtype=None) -> KVCache:
  """An empty cache for `batch_size` rows and at most `max_length` tokens (prompt + generated)."""
  dcfg = cfg.decoder
  if dcfg is None:
    raise ValueError(f"init_cache: family {cfg.family!r} has no decoder")
  shape = (dcfg.n_layers, batch_size, dcfg.n_kv_heads, max_length, dcfg.head_dim)
  dtype = jnp.dtype(dtype or cfg.dtype)
  return KVCache(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype), index=jnp.zeros((), jnp.int32),
                 kv_mask=jnp.zeros((batch_size, max_length), jnp.int32),
                 next_pos=jnp.zeros((batch_size,), jnp.int32), ntk_alpha=jnp.ones((batch_size,), jnp.float32))


def abstract_cache(cfg: ModelConfig, batch_size: int, max_length: int, dtype=None) -> KVCache:
  """Shapes/dtypes of `init_cache` without allocating."""
  return jax.eval_shape(lambda: init_cache(cfg, batch_size, max_length, dtype))
