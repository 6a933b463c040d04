"""SpecAugment (Park et al. 2019) on log-mel batches: frequency and time masks, jit-able.

Masks are drawn per clip and only inside the clip's valid frames; masked bins are set to the clip's
mean over its valid region. Time warping is not implemented. Used in training only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _band_mask(rng, size: int, max_width, limit, count: int):
  """[size] bool: union of `count` bands of width U[0, max_width] starting in [0, limit - width]."""
  idx = jnp.arange(size)
  mask = jnp.zeros((size,), bool)
  for k in jax.random.split(rng, count):
    k_w, k_s = jax.random.split(k)
    width = jnp.floor(jax.random.uniform(k_w) * (max_width + 1)).astype(jnp.int32)
    width = jnp.minimum(width, limit)
    start = jnp.floor(jax.random.uniform(k_s) * (limit - width + 1)).astype(jnp.int32)
    mask |= (idx >= start) & (idx < start + width)
  return mask


def spec_augment(rng, mel: jax.Array, lengths: jax.Array, *, freq_masks: int = 2, freq_width: int = 27,
                 time_masks: int = 2, time_width: int = 100, time_ratio: float = 0.05) -> jax.Array:
  """`mel` [N, n_mels, T]; `lengths` [N] valid mel frames. Time-mask width is capped at
  min(time_width, time_ratio × length)."""
  n, n_mels, t = mel.shape
  lengths = jnp.clip(lengths.astype(jnp.int32), 0, t)

  def one(key, x, length):
    k_f, k_t = jax.random.split(key)
    valid = jnp.arange(t) < length
    denom = jnp.maximum(length, 1) * n_mels
    fill = jnp.sum(jnp.where(valid[None, :], x, 0).astype(jnp.float32)) / denom
    fmask = _band_mask(k_f, n_mels, freq_width, n_mels, freq_masks) if freq_masks else jnp.zeros(n_mels, bool)
    if time_masks:
      cap = jnp.minimum(time_width, jnp.floor(time_ratio * length)).astype(jnp.int32)
      tmask = _band_mask(k_t, t, cap, length, time_masks) & valid
    else:
      tmask = jnp.zeros((t,), bool)
    hit = (fmask[:, None] & valid[None, :]) | tmask[None, :]
    return jnp.where(hit, fill.astype(x.dtype), x)

  return jax.vmap(one)(jax.random.split(rng, n), mel, lengths)


def from_config(aug_cfg):
  """A `(rng, mel, lengths) -> mel` function, or None when disabled."""
  if not aug_cfg or not aug_cfg.get("enabled", False):
    return None
  kw = {k: aug_cfg[k] for k in ("freq_masks", "freq_width", "time_masks", "time_width", "time_ratio")
        if k in aug_cfg}
  return lambda rng, mel, lengths: spec_augment(rng, mel, lengths, **kw)
