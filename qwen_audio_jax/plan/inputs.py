"""Abstract step inputs: jax.ShapeDtypeStructs carrying the run's shardings (nothing is allocated).

The batch mirrors what the data pipeline hands the train step (data/batching.py collate_train, cropped
by train/loop.py device_batch): B = train.batch_size rows of the longest sequence bucket, B × max_audios
mel windows of train.mel_frames frames (the full 30 s window when 0).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from qwen_audio_jax.sharding import partition


class PlanInputError(ValueError):
  """The config's batch cannot be laid out on the mesh."""


@dataclasses.dataclass(frozen=True)
class BatchShape:
  batch: int  # global rows
  seq_len: int
  audio_rows: int  # mel windows in the batch (0: no audio tower)
  mel_frames: int
  n_mels: int
  task_index: bool = False  # MoWE steps also take a task id per row (train/loop.py batch_keys)


def batch_shape(cfg, mcfg) -> BatchShape:
  """The largest training batch the config can produce."""
  data = cfg.data
  seq = max(int(s) for s in data.seq_buckets)
  has_audio = mcfg.encoder is not None and mcfg.decoder is not None
  frames = int(cfg.train.get("mel_frames", 0)) or (mcfg.encoder.n_frames if mcfg.encoder else 0)
  rows = int(cfg.train.batch_size)
  audio_rows = rows * int(data.get("max_audios", 1)) if has_audio else 0
  return BatchShape(rows, seq, audio_rows, frames, int(data.get("n_mels", 80)),
                    task_index=getattr(mcfg, "mowe", None) is not None)


def check_divisible(rows: int, mesh, what: str) -> None:
  split = mesh.shape["data"] * mesh.shape["fsdp"]
  if rows % split:
    raise PlanInputError(f"{what}={rows} is not divisible by the mesh's data x fsdp = {split} devices "
                         f"({' '.join(f'{k}={v}' for k, v in mesh.shape.items())})")


def abstract_batch(shape: BatchShape, mesh) -> dict:
  sharding = partition.batch_sharding(mesh)
  b, s = shape.batch, shape.seq_len

  def sds(dims, dtype):
    return jax.ShapeDtypeStruct(dims, dtype, sharding=sharding)

  out = {k: sds((b, s), jnp.int32) for k in ("input_ids", "attention_mask", "targets", "loss_mask")}
  if shape.audio_rows:
    out["audio_mel"] = sds((shape.audio_rows, shape.n_mels, shape.mel_frames), jnp.float32)
    out["audio_lengths"] = sds((shape.audio_rows,), jnp.int32)
  if shape.task_index:
    out["task_index"] = sds((b,), jnp.int32)
  return out


def with_shardings(abstract, shardings):
  """ShapeDtypeStructs of `abstract` carrying the matching NamedShardings."""
  return jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def cache_shardings(cache, mesh):
  """KV cache layout: rows over (data, fsdp), kv heads over tensor, everything else whole."""
  rows = partition.BATCH_AXES

  def one(leaf):
    if leaf.ndim == 5:  # k / v [L, B, KVH, S, Dh]
      spec = P(None, rows, "tensor" if leaf.shape[2] % mesh.shape["tensor"] == 0 else None, None, None)
    elif leaf.ndim >= 1:
      spec = P(rows)
    else:
      spec = P()
    return NamedSharding(mesh, spec)

  return jax.tree_util.tree_map(one, cache)
