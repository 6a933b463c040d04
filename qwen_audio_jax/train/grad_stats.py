"""Gradient norms per tower (audio encoder, projector, decoder, LoRA adapters), inside the jitted step.

`tower_grad_norms(grads)` returns, for every tower that has trainable leaves,
  "grad_norm/<tower>"   the global L2 norm of the tower's gradient (a scalar), and
  "grad_norms/<tower>"  a vector of per-array norms, one per layer for stacked (scanned) leaves,
                        for a histogram of how the gradient spreads over the tower.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# top-level parameter subtree → tower name
TOWERS = {"audio_encoder": "audio_encoder", "audio_projector": "projector", "audio_bos_eos": "projector",
          "decoder": "decoder"}


def _leaf_norms(path, g) -> jax.Array:
  g = g.astype(jnp.float32)
  if any(getattr(k, "key", None) == "layers" for k in path) and g.ndim >= 2:
    return jnp.sqrt(jnp.sum(jnp.square(g), axis=tuple(range(1, g.ndim))))  # [n_layers]
  return jnp.sqrt(jnp.sum(jnp.square(g)))[None]


def _tower_of(path) -> str | None:
  keys = [getattr(k, "key", None) for k in path]
  if keys and keys[0] == "lora":
    return "lora"
  if len(keys) >= 2 and keys[0] == "params":
    return TOWERS.get(keys[1], keys[1])
  return None


def tower_grad_norms(grads) -> dict[str, jax.Array]:
  """grads: the differentiated tree {"params": ..., "lora": ...} (frozen leaves absent)."""
  parts: dict[str, list[jax.Array]] = {}
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    tower = _tower_of(path)
    if tower is not None:
      parts.setdefault(tower, []).append(_leaf_norms(path, g))
  out = {}
  for tower, norms in sorted(parts.items()):
    vector = jnp.concatenate(norms)
    out[f"grad_norm/{tower}"] = jnp.sqrt(jnp.sum(jnp.square(vector)))
    out[f"grad_norms/{tower}"] = vector
  return out
