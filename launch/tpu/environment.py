"""The per-generation environment of a TPU run, in one place: gcloud accelerator type, TPU software
(runtime) version, XLA/libtpu flags, and the persistent compilation cache directory (keyed by topology,
since a cache entry only ever hits on the topology it was compiled for).

Coordinator: none to set on Cloud TPU: `jax.distributed.initialize()` (config distributed.mode=on, added by
the launcher) finds the coordinator and the process ids in the TPU VM metadata, and on Multislice queued
resources Cloud TPU sets the MEGASCALE_* variables on every worker.

XLA flags are MaxText's published recipe flags for FSDP training (async collective fusion, overlap of
collectives with compute); they are a starting point, replaced with --xla_flags.
"""

from __future__ import annotations

from qwen_audio_jax.plan import topology

RUNTIME_VERSION = {  # Cloud TPU "TPU software versions" page (PyTorch/JAX)
    "v4": "tpu-ubuntu2204-base",
    "v5e": "v2-alpha-tpuv5-lite",
    "v5p": "v2-alpha-tpuv5",
    "v6e": "v2-alpha-tpuv6e",
}
ACCELERATOR_PREFIX = {"v4": "v4", "v5e": "v5litepod", "v5p": "v5p", "v6e": "v6e"}

_FSDP_FLAGS = ("--xla_tpu_enable_data_parallel_all_reduce_opt=true "
               "--xla_tpu_data_parallel_opt_different_sized_ops=true "
               "--xla_tpu_enable_async_collective_fusion=true "
               "--xla_tpu_enable_async_collective_fusion_fuse_all_gather=true "
               "--xla_tpu_enable_async_collective_fusion_multiple_steps=true "
               "--xla_tpu_overlap_compute_collective_tc=true "
               "--xla_enable_async_all_gather=true")
LIBTPU_INIT_ARGS = {"v4": _FSDP_FLAGS, "v5e": _FSDP_FLAGS, "v5p": _FSDP_FLAGS, "v6e": _FSDP_FLAGS}


def accelerator_type(sl: topology.Slice) -> str:
  """gcloud's --accelerator-type: v4/v5p count TensorCores, v5e (v5litepod) and v6e count chips."""
  size = sl.chips_per_slice * sl.generation.cores_per_name_unit
  return f"{ACCELERATOR_PREFIX[sl.generation.name]}-{size}"


def cache_dir(root: str, sl: topology.Slice) -> str:
  return f"{root.rstrip('/')}/{sl.name}x{sl.num_slices}" if root else ""


def worker_env(sl: topology.Slice, cache_root: str = "", xla_flags: str | None = None) -> dict[str, str]:
  """Environment variables every worker exports before the program starts."""
  env = {"LIBTPU_INIT_ARGS": LIBTPU_INIT_ARGS[sl.generation.name] if xla_flags is None else xla_flags}
  cache = cache_dir(cache_root, sl)
  if cache:
    env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return {k: v for k, v in env.items() if v}
