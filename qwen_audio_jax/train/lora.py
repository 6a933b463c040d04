"""LoRA adapters on Dense kernels: y = x W + (alpha / r) · (x A) B.

The adapter tree mirrors the parameter tree: kernel `.../q/kernel` [..., in, out] gets
`.../q/lora_a` [..., in, r] and `.../q/lora_b` [..., r, out] (leading dims = the scanned layer axis; a
fused q|k|v kernel [..., in, 3, width] gets lora_b [..., r, 3, width]: one adapter, as PEFT on `c_attn`).
B starts at zero, so an untrained adapter leaves the model unchanged.
Training applies the adapters as a side path inside `model.layers.Linear` (no merged kernel, so no
full-size kernel gradient): `collection` turns the tree into the model's "lora" variable collection.
`merge` folds the adapters into the base kernels, W + (alpha / r) · A @ B, for merged exports.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
from flax import traverse_util
from jax.sharding import PartitionSpec as P

from qwen_audio_jax import checkpoint_io


class LoraConfigError(ValueError):
  """A LoRA target pattern is invalid, matches nothing, or matches a non-Dense kernel."""


def scale(rank: int, alpha: float) -> float:
  return float(alpha) / float(rank)


def targets(params: Mapping, patterns: Iterable[str]) -> list[tuple]:
  """Kernel paths matched (full match on the '/'-joined path of the kernel's module)."""
  rx = [re.compile(p) for p in patterns]
  flat = traverse_util.flatten_dict(dict(params))
  hits = []
  for path, leaf in flat.items():
    if path[-1] != "kernel":
      continue
    module = "/".join(map(str, path[:-1]))
    if any(r.fullmatch(module) for r in rx):
      if leaf.ndim - _lead(path) != (3 if path[-2] == "qkv" else 2):  # fused q|k|v: [in, 3, width]
        raise LoraConfigError(f"lora.targets: {module} has a kernel of shape {leaf.shape}; "
                              "LoRA applies to Dense kernels only")
      hits.append(path)
  if not hits:
    raise LoraConfigError(f"lora.targets {list(patterns)} match no Dense kernel "
                          "(module paths look like 'decoder/layers/attn/q')")
  return hits


def _lead(path: tuple) -> int:
  """Leading (scanned layer) dims of a leaf at `path`."""
  return 1 if "layers" in path else 0


def init(rng, params: Mapping, patterns: Iterable[str], rank: int, dtype=jnp.float32) -> dict:
  """A (PEFT default init: uniform ±1/sqrt(in)), B = 0."""
  flat = traverse_util.flatten_dict(dict(params))
  out = {}
  paths = targets(params, patterns)
  for key, path in zip(jax.random.split(rng, len(paths)), paths):
    w = flat[path]
    n = _lead(path)
    lead, d_in, d_out = w.shape[:n], w.shape[n], w.shape[n + 1:]  # d_out: (3, width) for fused q|k|v
    bound = 1.0 / math.sqrt(d_in)
    out[path[:-1] + ("lora_a",)] = jax.random.uniform(key, (*lead, d_in, rank), dtype, -bound, bound)
    out[path[:-1] + ("lora_b",)] = jnp.zeros((*lead, rank, *d_out), dtype)
  return traverse_util.unflatten_dict(out)


def logical_axes(lora: Mapping, param_logical: Mapping) -> dict:
  """A: (..., in_name, None); B: (..., None, out_name), from the kernel's logical names."""
  names = traverse_util.flatten_dict(dict(param_logical))
  out = {}
  for path in traverse_util.flatten_dict(dict(lora)):
    k, n = tuple(names[path[:-1] + ("kernel",)]), _lead(path)
    out[path] = P(*k[:n + 1], None) if path[-1] == "lora_a" else P(*k[:n], None, *k[n + 1:])
  return traverse_util.unflatten_dict(out)


def collection(lora: Mapping, s: float) -> dict:
  """The model's "lora" variable collection: A as is, B times the scale s (`Linear` adds (x A) B).

  Use as `Model(cfg).apply({"params": params, "lora": collection(lora, scale(r, alpha))}, ...)`;
  gradients flow back to the unscaled adapters."""
  flat = traverse_util.flatten_dict(dict(lora))
  return traverse_util.unflatten_dict({p: v * jnp.asarray(s, v.dtype) if p[-1] == "lora_b" else v
                                       for p, v in flat.items()})


def merge(params: Mapping, lora: Mapping, s: float) -> dict:
  """Base params with every adapted kernel replaced by W + s · A @ B (in W's dtype); the one definition
  lives in `checkpoint_io.merge_lora`, so a stored LoRA run reads as exactly the model training used."""
  return checkpoint_io.merge_lora(params, lora, s)


def count(lora: Mapping) -> int:
  return sum(math.prod(v.shape) for v in traverse_util.flatten_dict(dict(lora)).values())


def describe(lora: Any) -> str:
  mods = sorted({"/".join(map(str, p[:-1])) for p in traverse_util.flatten_dict(dict(lora))})
  return f"{len(mods)} adapted modules, {count(lora):,} adapter params"
