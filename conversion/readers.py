"""Lazy, one-tensor-at-a-time readers of PyTorch checkpoints (safetensors / .bin / openai .pt).

Listing names, shapes and dtypes reads only headers (safetensors) or memory-maps the file
(torch.load(mmap=True)); `read(name)` materialises a single tensor as numpy (bf16 via ml_dtypes).
safetensors are read without torch; torch is imported only for .bin / .pt files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import ml_dtypes  # registers bfloat16 with numpy (safetensors' numpy backend needs it)
import numpy as np
from safetensors import safe_open

from conversion.errors import ConversionError

_ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
              "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclasses.dataclass(frozen=True)
class TensorInfo:
  name: str
  shape: tuple[int, ...]
  dtype: str
  file: str


def torch_to_numpy(t) -> np.ndarray:
  import torch  # pylint: disable=import-outside-toplevel
  t = t.detach().contiguous()
  if t.dtype == torch.bfloat16:
    return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  return t.numpy()


def numpy_to_torch(a: np.ndarray):
  import torch  # pylint: disable=import-outside-toplevel
  a = np.ascontiguousarray(a)
  if a.dtype == ml_dtypes.bfloat16:
    return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
  return torch.from_numpy(a)


def sha256_file(path: str, chunk: int = 1 << 24) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while block := f.read(chunk):
      h.update(block)
  return h.hexdigest()


def _torch_load(path: str):
  import torch  # pylint: disable=import-outside-toplevel
  try:
    return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
  except Exception as e:  # truncated zip, pickle from another format, ...
    raise ConversionError(f"{path}: cannot read PyTorch file ({type(e).__name__}: {str(e).splitlines()[0]})")


class _SafetensorsFile:
  def __init__(self, path: str):
    self.path = path
    self.size = os.path.getsize(path)
    try:
      with safe_open(path, framework="np") as f:
        self.infos = {}
        for name in f.keys():
          s = f.get_slice(name)
          self.infos[name] = TensorInfo(name, tuple(s.get_shape()), _ST_DTYPES.get(s.get_dtype(), s.get_dtype()),
                                        path)
    except Exception as e:
      raise ConversionError(f"{path}: unreadable safetensors file ({str(e).splitlines()[0]}); truncated or corrupt?")

  def read(self, name: str) -> np.ndarray:
    """A copy of one tensor. The file is mapped only for this read: the mapping (and the page-cache pages
    it touched, which count in the converter's RSS) is released before returning."""
    with safe_open(self.path, framework="np") as f:
      return f.get_tensor(name)


class _TorchFile:
  """A `.bin` state dict or an openai `.pt` ({"dims", "model_state_dict"}), memory-mapped."""

  def __init__(self, path: str):
    self.path = path
    self.size = os.path.getsize(path)
    obj = _torch_load(path)
    self.dims = obj.get("dims") if isinstance(obj, dict) else None
    state = obj.get("model_state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
      raise ConversionError(f"{path}: not a state dict (found {type(obj).__name__})")
    self._state = {k: v for k, v in state.items() if hasattr(v, "numpy")}
    self.infos = {k: TensorInfo(k, tuple(v.shape), str(v.dtype).removeprefix("torch."), path)
                  for k, v in self._state.items()}

  def read(self, name: str) -> np.ndarray:
    return torch_to_numpy(self._state[name])


def _open_file(path: str):
  if path.endswith(".safetensors"):
    return _SafetensorsFile(path)
  if path.endswith((".bin", ".pt", ".pth")):
    return _TorchFile(path)
  raise ConversionError(f"{path}: unknown weight file type (expected .safetensors, .bin or .pt)")


def weight_files(path: str) -> list[str]:
  """The weight files of a checkpoint file or folder (an index json names the shards)."""
  if os.path.isfile(path):
    return [path]
  if not os.path.isdir(path):
    raise ConversionError(f"{path}: no such file or directory")
  for index in INDEX_FILES:
    ipath = os.path.join(path, index)
    if os.path.exists(ipath):
      try:
        weight_map = json.load(open(ipath))["weight_map"]
      except (ValueError, KeyError) as e:
        raise ConversionError(f"{ipath}: not a valid index json ({e})")
      shards = sorted(set(weight_map.values()))
      for shard in shards:
        if not os.path.exists(os.path.join(path, shard)):
          raise ConversionError(f"{ipath}: names shard {shard}, which does not exist")
      return [os.path.join(path, s) for s in shards]
  for single in SINGLE_FILES:
    if os.path.exists(os.path.join(path, single)):
      return [os.path.join(path, single)]
  found = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
  if found:
    return [os.path.join(path, f) for f in found]
  raise ConversionError(f"{path}: no weights found (model.safetensors[.index.json] or pytorch_model.bin[.index.json])")


class TensorSource:
  """All tensors of one checkpoint (file or folder, single or sharded), opened lazily."""

  def __init__(self, path: str):
    self.path = path
    self.files = weight_files(path)
    self._handles = [_open_file(f) for f in self.files]
    self.infos: dict[str, TensorInfo] = {}
    self._where = {}
    for h in self._handles:
      for name, info in h.infos.items():
        if name in self.infos:
          raise ConversionError(f"{path}: tensor {name} appears in both {self.infos[name].file} and {info.file}")
        self.infos[name] = info
        self._where[name] = h
    self._check_index()
    self.dims = next((h.dims for h in self._handles if getattr(h, "dims", None) is not None), None)

  def _check_index(self):
    for index in INDEX_FILES:
      ipath = os.path.join(self.path, index)
      if os.path.isdir(self.path) and os.path.exists(ipath):
        listed = json.load(open(ipath))["weight_map"]
        for name, shard in listed.items():
          if name not in self.infos:
            raise ConversionError(f"{ipath}: lists {name} in {shard}, but the shard does not contain it")
        return

  def read(self, name: str) -> np.ndarray:
    """One tensor as numpy. The files are memory-mapped: one that shrank since it was opened (a shard still
    being copied, or truncated meanwhile) would kill the process with SIGBUS, so its size is checked first."""
    handle = self._where[name]
    size = os.path.getsize(handle.path) if os.path.exists(handle.path) else -1
    if size != handle.size:
      raise ConversionError(f"{handle.path}: file changed size while converting ({handle.size} -> {size} bytes; "
                            f"truncated or still being written?) before tensor {name} was read")
    try:
      return handle.read(name)
    except Exception as e:  # pylint: disable=broad-exception-caught
      first = str(e).splitlines()[0] if str(e) else ""
      raise ConversionError(f"{handle.path}: cannot read tensor {name} ({type(e).__name__}: {first}); "
                            "truncated or corrupt?") from None

  def sha256(self) -> dict[str, str]:
    return {os.path.basename(f): sha256_file(f) for f in self.files}
