"""The conversion record (metadata.json) and the side files of a converted checkpoint.

Side files: `carried.safetensors` (source tensors the JAX model does not use, untouched, for export) and
`source_assets/` (small non-weight files of the source folder: tokenizer, generation config, code).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import re
import shutil

import numpy as np
from safetensors.numpy import save_file

from conversion.readers import INDEX_FILES, TensorSource
from qwen_audio_jax import checkpoint_io

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5", ".ckpt")
MAX_ASSET_BYTES = 64 << 20
TOKENIZER_FAMILY = {"whisper": "whisper", "qwen": "qwen", "qwen-audio": "qwen-audio", "qwen2-audio": "qwen2-audio"}


def project_version() -> str:
  try:
    return importlib.metadata.version("qwen-audio-jax")
  except importlib.metadata.PackageNotFoundError:
    return "unknown"


def tensor_table(source: TensorSource, names) -> dict[str, dict]:
  return {n: {"dtype": source.infos[n].dtype, "shape": list(source.infos[n].shape)} for n in sorted(names)}


def source_entry(flag: str, source: TensorSource, raw_config: dict, plan) -> dict:
  """One source of a conversion: format, path, sha256 of each weight file, config, tensors used/carried."""
  return {
      "format": flag,
      "path": os.path.abspath(source.path),
      "sha256": source.sha256(),
      "config": raw_config,
      "mapped": tensor_table(source, [m[0] for m in plan.matches]),
      "carried": tensor_table(source, plan.carried),
      "generated": sorted({r.targets[0] for r, _ in plan.defaults}),
  }


def base_record(sources: list[dict], family: str, dtype: str) -> dict:
  return {
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "project_version": project_version(),
      "converter": "conversion/convert.py",
      "dtype": dtype,
      "tokenizer": {"family": TOKENIZER_FAMILY[family]},
      "sources": sources,
  }


def write_carried(directory: str, source: TensorSource, names: list[str], flag: str) -> None:
  if names:
    tensors = {n: np.ascontiguousarray(source.read(n)) for n in names}
    save_file(tensors, os.path.join(directory, checkpoint_io.CARRIED_FILE), metadata={"format": "pt", "source": flag})


def is_tokenizer_file(name: str) -> bool:
  return bool(re.search(r"token|vocab|merges|tiktoken|\.model$", name))


def copy_assets(directory: str, source_path: str) -> list[str]:
  """Copies small non-weight files of a source folder into source_assets/; returns their names."""
  if not os.path.isdir(source_path):
    return []
  names = []
  for name in sorted(os.listdir(source_path)):
    path = os.path.join(source_path, name)
    if (not os.path.isfile(path) or name.endswith(WEIGHT_SUFFIXES) or name in INDEX_FILES
        or os.path.getsize(path) > MAX_ASSET_BYTES):
      continue
    os.makedirs(os.path.join(directory, checkpoint_io.ASSETS_DIR), exist_ok=True)
    shutil.copy2(path, os.path.join(directory, checkpoint_io.ASSETS_DIR, name))
    names.append(name)
  return names
