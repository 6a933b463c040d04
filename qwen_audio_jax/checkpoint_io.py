"""Read/write a converted model checkpoint (torch-free): what training and inference restore directly.

Layout of a checkpoint directory (it appears only when complete: written to DIR.tmp-XXXX, then renamed):
  params/             Orbax PyTree checkpoint of the parameter tree (stacked layers, see PARAMS contract)
  model_config.json   `config.to_dict(ModelConfig)`
  metadata.json       record: format, tokenizer family, source, hashes, dtype, tensors, ...
  carried.safetensors optional: source tensors the JAX model does not use (e.g. Whisper's text decoder)
  source_assets/      optional: small non-weight files of the source folder (tokenizer, configs, code)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import mmap
import os
import shutil
import tempfile
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint._src.serialization import type_handler_registry, type_handlers

from qwen_audio_jax.model import config as config_lib
from qwen_audio_jax.model import params as params_lib

FORMAT = "qwen-audio-jax/model-checkpoint"
FORMAT_VERSION = 1
PARAMS_DIR, CONFIG_FILE, METADATA_FILE = "params", "model_config.json", "metadata.json"
CARRIED_FILE, ASSETS_DIR = "carried.safetensors", "source_assets"
CHUNK_BYTES = 256 << 20  # upper bound of one stored chunk


class CheckpointError(Exception):
  """A checkpoint directory is missing, incomplete or does not match its config (one-line message)."""


# ------------------------------------------------------------------------------------------------
# Parameter paths
# ------------------------------------------------------------------------------------------------


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """Nested dict -> {"a/b/c": leaf}."""
  flat = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(flatten(value, path + "/"))
    else:
      flat[path] = value
  return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for path, value in flat.items():
    *parents, leaf = path.split("/")
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


@functools.lru_cache(maxsize=32)
def _param_shapes(cfg: config_lib.ModelConfig) -> tuple[tuple[str, tuple[int, ...]], ...]:
  return tuple((path, tuple(leaf.shape)) for path, leaf in flatten(params_lib.abstract_params(cfg)).items())


def param_shapes(cfg: config_lib.ModelConfig) -> dict[str, tuple[int, ...]]:
  """{path: shape} of every parameter the model declares for `cfg` (from `model.abstract_params`)."""
  return dict(_param_shapes(cfg))


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_directory(directory: str, overwrite: bool = False) -> Iterator[str]:
  """Yields a temporary sibling of `directory`; renames it to `directory` only if the block succeeds."""
  directory = os.path.abspath(directory)
  if os.path.exists(directory) and not overwrite:
    raise CheckpointError(f"{directory}: already exists (pass overwrite to replace it)")
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=os.path.basename(directory) + ".tmp-", dir=parent)
  try:
    yield tmp
    if os.path.exists(directory):
      old = tempfile.mkdtemp(prefix=os.path.basename(directory) + ".old-", dir=parent)
      os.rename(directory, os.path.join(old, "x"))
      os.rename(tmp, directory)
      shutil.rmtree(old)
    else:
      os.rename(tmp, directory)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


class _SequentialNumpyHandler(type_handlers.NumpyHandler):
  """Host numpy arrays written in place (no deep copy) and one at a time.

  Orbax's NumpyHandler starts every array's write at once, and tensorstore then holds an encoded copy
  of the whole model in memory; writing sequentially bounds that to about one array (measured: 2.5 GB
  of random fp32 -> +2.2 GB peak RSS at once, +0.3 GB sequentially). Uses Orbax 0.12's
  `_open_and_write` hook; without it, writes are merely concurrent again.
  """

  def __init__(self):
    super().__init__(deepcopy_host_arrays=False)
    self._locks: dict[int, asyncio.Lock] = {}

  async def _open_and_write(self, value, tspec, ts_context):
    lock = self._locks.setdefault(id(asyncio.get_running_loop()), asyncio.Lock())
    async with lock:
      await super()._open_and_write(value, tspec, ts_context)
      release_pages(value)


def release_pages(array) -> None:
  """Unmaps a memory-mapped array's pages from this process (its RSS); a no-op for other arrays.

  The mapping is shared and file-backed, so nothing is lost: written pages stay in the page cache (the
  kernel writes them back when it likes) and the next access maps the file's current contents again.
  """
  if isinstance(array, np.memmap) and isinstance(getattr(array, "_mmap", None), mmap.mmap):
    array._mmap.madvise(mmap.MADV_DONTNEED)  # pylint: disable=protected-access


def _numpy_registry():
  handlers = []
  for ty, handler in type_handler_registry._DEFAULT_TYPE_HANDLERS:  # pylint: disable=protected-access
    handlers.append((ty, _SequentialNumpyHandler() if ty is np.ndarray else handler))
  return type_handler_registry.create_type_handler_registry(*handlers)


def write_params(directory: str, params: Mapping[str, Any]) -> None:
  """Saves a (nested) parameter tree of numpy/jax arrays with Orbax into `directory` (must not exist)."""
  handler = ocp.PyTreeCheckpointHandler(type_handler_registry=_numpy_registry(), save_concurrent_gb=2)
  save_args = jax.tree.map(lambda _: ocp.SaveArgs(chunk_byte_size=CHUNK_BYTES), params)
  with ocp.Checkpointer(handler) as ckptr:
    ckptr.save(os.path.abspath(directory), args=ocp.args.PyTreeSave(params, save_args=save_args))


def save_model_checkpoint(directory: str, cfg: config_lib.ModelConfig, params: Mapping[str, Any],
                          metadata: Mapping[str, Any] | None = None, *, overwrite: bool = False,
                          write_extra: Callable[[str], dict | None] | None = None) -> str:
  """Writes params + config + metadata atomically; returns the directory.

  `write_extra(tmp_dir)` may add files; the dict it returns is merged into the metadata.

  Params are checked against the model's declared shapes first (nothing is written on a mismatch).
  """
  params = dict(params.get("params", params)) if isinstance(params, Mapping) else params
  check_params(params, cfg, where=directory)
  record = {"format": FORMAT, "format_version": FORMAT_VERSION, **dict(metadata or {})}
  with atomic_directory(directory, overwrite=overwrite) as tmp:
    write_params(os.path.join(tmp, PARAMS_DIR), params)
    with open(os.path.join(tmp, CONFIG_FILE), "w") as f:
      json.dump(config_lib.to_dict(cfg), f, indent=2)
    if write_extra is not None:
      record.update(write_extra(tmp) or {})
    with open(os.path.join(tmp, METADATA_FILE), "w") as f:
      json.dump(record, f, indent=2)
  return directory


def check_params(params: Mapping[str, Any], cfg: config_lib.ModelConfig, where: str = "params") -> None:
  """Raises CheckpointError naming the first missing / unexpected / mis-shaped parameter."""
  check_shapes({p: tuple(np.shape(v)) for p, v in flatten(params).items()}, cfg, where)


def check_shapes(shapes: Mapping[str, tuple[int, ...]], cfg: config_lib.ModelConfig, where: str) -> None:
  expected = param_shapes(cfg)
  for path, shape in expected.items():
    if path not in shapes:
      raise CheckpointError(f"{where}: missing parameter {path} (expected shape {list(shape)})")
    if tuple(shapes[path]) != shape:
      raise CheckpointError(f"{where}: parameter {path} has shape {list(shapes[path])}, "
                            f"config says {list(shape)}")
  for path in shapes:
    if path not in expected:
      raise CheckpointError(f"{where}: unexpected parameter {path} (shape {list(shapes[path])}) "
                            f"for a {cfg.family} model")


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------


def read_config(directory: str) -> config_lib.ModelConfig:
  path = os.path.join(directory, CONFIG_FILE)
  if not os.path.exists(path):
    raise CheckpointError(f"{directory}: not a model checkpoint ({CONFIG_FILE} missing)")
  with open(path) as f:
    return config_lib.from_dict(json.load(f))


def read_metadata(directory: str) -> dict[str, Any]:
  path = os.path.join(directory, METADATA_FILE)
  if not os.path.exists(path):
    raise CheckpointError(f"{directory}: not a model checkpoint ({METADATA_FILE} missing)")
  with open(path) as f:
    record = json.load(f)
  if record.get("format") != FORMAT or record.get("format_version", 0) > FORMAT_VERSION:
    raise CheckpointError(f"{path}: format {record.get('format')!r} v{record.get('format_version')} "
                          f"is not {FORMAT} v<={FORMAT_VERSION}")
  return record


def stored_shapes(directory: str) -> dict[str, tuple[tuple[int, ...], str]]:
  """{path: (shape, dtype)} as stored in `directory/params`, read from Orbax metadata only."""
  meta = ocp.StandardCheckpointer().metadata(os.path.join(os.path.abspath(directory), PARAMS_DIR))
  tree = meta.item_metadata.tree if hasattr(meta, "item_metadata") else meta
  return {p: (tuple(m.shape), jnp.dtype(m.dtype).name) for p, m in flatten(tree).items()}


def load_model_checkpoint(directory: str, *, shardings: Any = None, dtype: Any = None
                          ) -> tuple[config_lib.ModelConfig, dict[str, Any], dict[str, Any]]:
  """Returns (config, params, metadata); params as jax arrays (sharded if `shardings` is given).

  shardings: a pytree like params of `jax.sharding.Sharding` (e.g. from the logical rules); default:
    every array on the first local device. dtype: cast on restore, either one dtype for every parameter
    or a params-shaped tree of dtypes / arrays (e.g. `model.abstract_params(cfg)` of a config with
    per-tower param dtypes; paths it lacks keep their stored dtype); default: the stored dtypes.
  Raises CheckpointError (one line) if the stored tree does not match the config.
  """
  directory = os.path.abspath(directory)
  cfg, metadata = read_config(directory), read_metadata(directory)
  if not os.path.isdir(os.path.join(directory, PARAMS_DIR)):
    raise CheckpointError(f"{directory}: incomplete checkpoint ({PARAMS_DIR}/ missing)")
  stored = stored_shapes(directory)
  check_shapes({p: s for p, (s, _) in stored.items()}, cfg, directory)
  default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  flat_shardings = flatten(shardings) if shardings is not None else {}
  if isinstance(dtype, Mapping):
    per_path = {p: jnp.dtype(getattr(d, "dtype", d)) for p, d in flatten(dtype).items()}
    dtype_of = lambda p, stored_dtype: per_path.get(p, jnp.dtype(stored_dtype))  # noqa: E731
  else:
    dtype_of = lambda p, stored_dtype: jnp.dtype(dtype if dtype is not None else stored_dtype)  # noqa: E731
  target = unflatten({
      p: jax.ShapeDtypeStruct(shape, dtype_of(p, stored_dtype), sharding=flat_shardings.get(p, default))
      for p, (shape, stored_dtype) in stored.items()})
  with ocp.StandardCheckpointer() as ckptr:
    params = ckptr.restore(os.path.join(directory, PARAMS_DIR), target)
  return cfg, params, metadata


def read_params(directory: str, paths: list[str]) -> dict[str, np.ndarray]:
  """Host numpy arrays of some parameters only ({path: array}), e.g. to export one leaf at a time."""
  item = unflatten({p: np.zeros(0) for p in paths})
  restore_args = unflatten({p: ocp.RestoreArgs(restore_type=np.ndarray) for p in paths})
  with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as ckptr:
    tree = ckptr.restore(os.path.join(os.path.abspath(directory), PARAMS_DIR),
                         args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True))
  return {p: flatten(tree)[p] for p in paths}
