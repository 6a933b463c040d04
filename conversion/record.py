"""The conversion record (metadata.json) and the side files of a converted checkpoint.

Side files: `carried.safetensors` (source tensors the JAX model does not use, untouched, for export) and
`source_assets/` (small non-weight files of the source folder: tokenizer, generation config, code).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import re
import shutil
import struct

import ml_dtypes
import numpy as np

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


_SAFETENSORS_DTYPES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
                       "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}


def write_carried(directory: str, source: TensorSource, names: list[str], flag: str) -> None:
  """Writes the tensors the JAX model does not use to carried.safetensors, one tensor in memory at a time
  (the header is built from the source's shapes and dtypes, then each tensor's bytes are appended)."""
  if not names:
    return
  header, offset = {"__metadata__": {"format": "pt", "source": flag}}, 0
  for n in names:
    info = source.infos[n]
    nbytes = int(np.prod(info.shape, dtype=np.int64)) * np.dtype(_numpy_dtype(info.dtype)).itemsize
    header[n] = {"dtype": _SAFETENSORS_DTYPES[info.dtype], "shape": list(info.shape),
                 "data_offsets": [offset, offset + nbytes]}
    offset += nbytes
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)
  with open(os.path.join(directory, checkpoint_io.CARRIED_FILE), "wb") as f:
    f.write(struct.pack("<Q", len(blob)) + blob)
    for n in names:
      array = np.ascontiguousarray(source.read(n))
      if array.dtype != _numpy_dtype(source.infos[n].dtype) or array.shape != tuple(source.infos[n].shape):
        raise ValueError(f"{source.path}: tensor {n} read as {array.dtype}{list(array.shape)}, "
                         f"header says {source.infos[n].dtype}{list(source.infos[n].shape)}")
      f.write(array.reshape(-1).view(np.uint8).data)  # no copy of the tensor's bytes
      del array


def _numpy_dtype(name: str) -> np.dtype:
  return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def is_tokenizer_file(name: str) -> bool:
  return bool(re.search(r"token|vocab|merges|tiktoken|\.model$", name))


def copy_asset(directory: str, path: str) -> str:
  """Copies one file into source_assets/ (replacing a namesake); returns its name."""
  os.makedirs(os.path.join(directory, checkpoint_io.ASSETS_DIR), exist_ok=True)
  shutil.copy2(path, os.path.join(directory, checkpoint_io.ASSETS_DIR, os.path.basename(path)))
  return os.path.basename(path)


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
    names.append(copy_asset(directory, path))
  return names
