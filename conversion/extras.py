"""MoWE and encoder-PETL parameters beside an exported HF checkpoint (no HF model has them).

Layout, next to model.safetensors / config.json of the export:
  mowe.safetensors           every parameter under `mowe/` in this project's layout: tensor name = the
                             '/'-joined Flax path (e.g. `mowe/weak_0/layers/attn/query/kernel`, stacked
                             [layers, in, out]; `mowe/proj_0/kernel` [d_weak, d_llm]; `mowe/gate/kernel`
                             [d_enc, K]; `mowe/router_logits` [K]); weak encoders are this project's
                             AudioEncoder (pooled) of the sizes in mowe_config.json
  mowe_config.json           {"format": "qwen-audio-jax/mowe", "version": 1, "mowe": ModelConfig.mowe as a dict}
  encoder_petl.safetensors   `audio_encoder/prompts` [n, d] and `audio_encoder/layers/{attn,mlp}_adapter/...`
  encoder_petl_config.json   {"format": "qwen-audio-jax/encoder_petl", "version": 1, "encoder_petl": {...}}
`conversion/convert.py` reads them back into the converted checkpoint (bit-exact round trip).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Mapping

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from conversion.errors import ConversionError
from qwen_audio_jax.model import config as config_lib

BLOCKS = {"mowe": ("mowe.safetensors", "mowe_config.json"),
          "encoder_petl": ("encoder_petl.safetensors", "encoder_petl_config.json")}
VERSION = 1


def owns(block: str, path: str) -> bool:
  """Whether parameter `path` belongs to `block` (and to no HF name map)."""
  if block == "mowe":
    return path.startswith("mowe/")
  return path == "audio_encoder/prompts" or (path.startswith("audio_encoder/layers/") and "_adapter/" in path)


def base_config(cfg: config_lib.ModelConfig) -> config_lib.ModelConfig:
  return cfg.replace(mowe=None, encoder_petl=None)


def write(directory: str, cfg: config_lib.ModelConfig, paths, read: Callable[[list[str]], Mapping]) -> list[str]:
  """Writes the blocks `cfg` has; `paths`: every stored parameter path; `read(paths)` -> {path: array}."""
  written = []
  for block, (weights, config) in BLOCKS.items():
    value = getattr(cfg, block)
    if value is None:
      continue
    mine = sorted(p for p in paths if owns(block, p))
    save_file({p: np.ascontiguousarray(a) for p, a in read(mine).items()}, os.path.join(directory, weights),
              metadata={"format": f"qwen-audio-jax/{block}"})
    with open(os.path.join(directory, config), "w") as f:
      json.dump({"format": f"qwen-audio-jax/{block}", "version": VERSION, block: dataclasses.asdict(value)}, f,
                indent=2)
    written += [weights, config]
  return written


def read(directory: str) -> tuple[dict, dict[str, np.ndarray]]:
  """({block: config dataclass} to put into the ModelConfig, {path: array}) from a folder ({} , {} if none)."""
  blocks, arrays = {}, {}
  if not os.path.isdir(directory):
    return blocks, arrays
  for block, (weights, config) in BLOCKS.items():
    cpath, wpath = os.path.join(directory, config), os.path.join(directory, weights)
    if not os.path.exists(cpath) and not os.path.exists(wpath):
      continue
    if not (os.path.exists(cpath) and os.path.exists(wpath)):
      raise ConversionError(f"{directory}: {weights} and {config} go together; one of them is missing")
    try:
      raw = json.load(open(cpath))
      if raw.get("format") != f"qwen-audio-jax/{block}" or raw.get("version") != VERSION:
        raise ValueError(f"format {raw.get('format')!r} version {raw.get('version')!r}")
      blocks[block] = getattr(config_lib.from_dict({block: raw[block]}), block)
    except (ValueError, KeyError, TypeError) as e:
      raise ConversionError(f"{cpath}: not a {block} config of this project ({e})") from None
    with safe_open(wpath, framework="np") as f:
      for name in f.keys():
        if not owns(block, name):
          raise ConversionError(f"{wpath}: tensor {name} is not a {block} parameter")
        arrays[name] = f.get_tensor(name)
  return blocks, arrays
