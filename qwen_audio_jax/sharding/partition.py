"""Logical axis names → NamedShardings, sharding checks, and host batches → global arrays."""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from qwen_audio_jax.sharding.rules import LOGICAL_AXIS_RULES

BATCH_AXES = ("data", "fsdp")  # mesh axes the leading (example) dimension of a batch is split over


class ShardingError(ValueError):
  """A parameter ended up sharded in a way the run config forbids."""


def _axis_size(mesh: Mesh, axes) -> int:
  if axes is None:
    return 1
  axes = (axes,) if isinstance(axes, str) else axes
  return math.prod(mesh.shape[a] for a in axes)


def _fit(spec: P, shape: Sequence[int], mesh: Mesh, name: str) -> P:
  """Drops mesh axes from dimensions they do not divide (such dimensions stay whole)."""
  out = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    if axes is not None and dim % _axis_size(mesh, axes):
      logging.warning("sharding: %s dim %d (size %d) not divisible by mesh axes %s; kept whole",
                      name, len(out), dim, axes)
      axes = None
    out.append(axes)
  return P(*out)


def _is_names(x) -> bool:
  return isinstance(x, P) or (isinstance(x, tuple) and all(isinstance(n, (str, type(None))) for n in x))


def logical_to_shardings(logical: Any, abstract: Any, mesh: Mesh,
                         rules=LOGICAL_AXIS_RULES) -> Any:
  """NamedShardings for `abstract` (a tree of arrays/ShapeDtypeStructs) from logical axis names.

  `logical` has the same structure with a PartitionSpec (or tuple) of logical names per leaf.
  """
  def one(path, names, leaf):
    spec = nn.logical_to_mesh_axes(tuple(names), rules)
    return NamedSharding(mesh, _fit(spec, leaf.shape, mesh, jax.tree_util.keystr(path)))

  names_leaves = jax.tree_util.tree_leaves(logical, is_leaf=_is_names)
  flat, treedef = jax.tree_util.tree_flatten_with_path(abstract)
  if len(names_leaves) != len(flat):
    raise ShardingError(f"logical axes tree has {len(names_leaves)} leaves, params have {len(flat)}")
  return treedef.unflatten([one(p, n, x) for (p, x), n in zip(flat, names_leaves)])


def follow_params(tree_abstract: Any, param_abstract: Any, param_shardings: Any, mesh: Mesh) -> Any:
  """Shardings for an optimizer-state-like tree: a leaf whose key path ends with a parameter's path
  (and has its shape) gets that parameter's sharding; everything else is replicated."""
  by_path = {}
  for (path, leaf), sh in zip(jax.tree_util.tree_flatten_with_path(param_abstract)[0],
                              jax.tree_util.tree_leaves(param_shardings)):
    by_path[tuple(str(k) for k in path)] = (tuple(leaf.shape), sh)
  replicated = NamedSharding(mesh, P())

  def one(path, leaf):
    keys = tuple(str(k) for k in path)
    for start in range(len(keys)):
      hit = by_path.get(keys[start:])
      if hit is not None and hit[0] == tuple(leaf.shape):
        return hit[1]
    return replicated

  return jax.tree_util.tree_map_with_path(one, tree_abstract)


def replicated_leaves(abstract: Any, shardings: Any, min_bytes: int = 1 << 20) -> list[tuple[str, int]]:
  """(path, bytes) of every leaf of at least `min_bytes` that is fully replicated."""
  out = []
  for (path, leaf), sh in zip(jax.tree_util.tree_flatten_with_path(abstract)[0],
                              jax.tree_util.tree_leaves(shardings)):
    nbytes = math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
    if nbytes >= min_bytes and sh.is_fully_replicated and sh.num_devices > 1:
      out.append((jax.tree_util.keystr(path), nbytes))
  return out


def check_sharded(abstract: Any, shardings: Any, min_bytes: int) -> None:
  """Raises if a leaf of at least `min_bytes` is replicated over a mesh of more than one device."""
  bad = replicated_leaves(abstract, shardings, min_bytes)
  if bad:
    listed = ", ".join(f"{p} ({b / 2**20:.1f} MiB)" for p, b in bad[:8])
    raise ShardingError(f"{len(bad)} parameter(s) of >= {min_bytes} bytes left replicated: {listed}; "
                        "fix sharding/rules.py or the model's logical axes")


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading dimension over (data, fsdp); other dimensions whole."""
  return NamedSharding(mesh, P(BATCH_AXES))


def host_to_global(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Each process passes its own rows; returns global arrays split over (data, fsdp)."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


@contextlib.contextmanager
def activation_context(mesh: Mesh):
  """Mesh + rule table in context, so `nn.with_logical_constraint` in model code takes effect
  while a function is traced."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_AXIS_RULES):
    yield
