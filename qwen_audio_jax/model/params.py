"""Parameter trees from a config: init, shapes without allocation, logical axes and counts.

The trees are the contents of the Flax `params` collection (plain nested dicts of arrays, layout in
`.scratch/PARAMS.md`); apply them with `Model(cfg).apply({"params": params}, ...)`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from qwen_audio_jax.model.config import ModelConfig, unpadded
from qwen_audio_jax.model.multimodal import Model, check_config

# Not counted as parameters (spec §2.6): the frozen positional table of the audio encoder (and of MoWE's
# weak encoders, `mowe/weak_k/embed_positions`).
EXCLUDED_FROM_COUNT = (("audio_encoder", "embed_positions"),)


def _excluded(path: tuple) -> bool:
  if any(path[:len(ex)] == ex for ex in EXCLUDED_FROM_COUNT):
    return True
  return len(path) == 3 and path[0] == "mowe" and path[2] == "embed_positions"


def _boxed_init(cfg: ModelConfig, rng: jax.Array):
  """Variables with nn.LogicallyPartitioned boxes (tiny dummy inputs; shapes do not depend on them)."""
  check_config(cfg)
  mel = None if cfg.encoder is None or cfg.family == "qwen" else jnp.zeros((1, cfg.encoder.n_mels, 4), jnp.float32)
  ids = None if cfg.family == "whisper" else jnp.zeros((1, 2), jnp.int32)
  return Model(cfg).init(rng, mel, ids, method=Model.init_all)["params"]


def init_params(cfg: ModelConfig, rng: jax.Array) -> dict:
  """Randomly initialised params (plain arrays in cfg.param_dtype)."""
  return nn.meta.unbox(_boxed_init(cfg, rng))


def abstract_params(cfg: ModelConfig) -> dict:
  """jax.ShapeDtypeStruct tree of the params; nothing is allocated."""
  return jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))


def logical_axes(cfg: ModelConfig) -> dict:
  """Tree (same structure as the params) of PartitionSpecs of logical axis names."""
  boxed = jax.eval_shape(lambda: _boxed_init(cfg, jax.random.PRNGKey(0)))
  return nn.get_partition_spec(boxed)


def _flat(tree) -> dict[tuple[str, ...], object]:
  return {tuple(k.key for k in path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def count_params(cfg: ModelConfig, prefix: str | None = None) -> int:
  """Number of parameters from shapes (no allocation), excluding the encoder's positional table and
  padded vocabulary rows (`vocab_pad_to`).

  prefix: count only the subtree with this top-level name (e.g. "decoder", "audio_encoder").
  """
  total = 0
  for path, leaf in _flat(abstract_params(unpadded(cfg))).items():
    if _excluded(path):
      continue
    if prefix is None or path[0] == prefix:
      total += int(np.prod(leaf.shape))
  return total
