"""The conversion engine: match a source's tensors to a NameMap, validate, then stream them into arrays.

`plan()` reads only names/shapes/dtypes and fails with one line naming the first missing, unexpected or
mis-shaped tensor. `fill()` then reads one tensor at a time, applies the rule's transform, casts, and
writes it into preallocated (memory-mapped) arrays — stacked leaves layer by layer.
"""

from __future__ import annotations

import dataclasses
import os
import re

import ml_dtypes
import numpy as np

from conversion import transforms
from conversion.errors import ConversionError
from conversion.maps import NameMap, Rule
from conversion.readers import TensorSource
from qwen_audio_jax import checkpoint_io
from qwen_audio_jax.model.audio_encoder import sinusoids
from qwen_audio_jax.model.config import ModelConfig

DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16),
          "float16": np.dtype(np.float16)}


def is_stacked(path: str) -> bool:
  return "/layers/" in path


@dataclasses.dataclass
class Plan:
  """What `fill` will do for one source: (name, rule, layer) matches, carried names, defaults."""

  source: TensorSource
  name_map: NameMap
  cfg: ModelConfig
  matches: list[tuple[str, Rule, int | None]]
  carried: list[str]
  defaults: list[tuple[Rule, int | None]]


def _zeros_view(shape, dtype=np.bool_) -> np.ndarray:
  """A zero-memory array of `shape` (for shape arithmetic through the transforms)."""
  return np.broadcast_to(np.zeros((), dtype), shape)


def _canonical(name: str, name_map: NameMap) -> str:
  for pattern, repl in name_map.aliases:
    if re.match(pattern, name):
      return re.sub("^" + pattern, repl, name, count=1)
  return name


def active_rules(name_map: NameMap, shapes: dict[str, tuple[int, ...]]) -> list[Rule]:
  """Rules whose targets the model declares for this config (e.g. no bos/eos table without it)."""
  rules = []
  for rule in name_map.rules:
    present = [t in shapes for t in rule.targets]
    if all(present):
      rules.append(rule)
    elif any(present):
      raise AssertionError(f"name map rule {rule.source} maps partly outside the parameter tree")
  return rules


def expected_source_shape(rule: Rule, shapes, cfg: ModelConfig) -> tuple[int, ...]:
  parts = tuple(_zeros_view(shapes[t][1:] if rule.stacked else shapes[t]) for t in rule.targets)
  return tuple(transforms.get(rule.transform).backward(parts, cfg).shape)


def plan(source: TensorSource, name_map: NameMap, cfg: ModelConfig, shapes: dict[str, tuple[int, ...]],
         source_flag: str) -> Plan:
  """Matches every source tensor to a rule or a carry pattern; checks completeness and shapes."""
  rules = active_rules(name_map, shapes)
  carry = [re.compile(p) for p in name_map.carry]
  matches, carried, seen = [], [], {}
  for name, info in source.infos.items():
    cname = _canonical(name, name_map)
    hit = None
    for rule in rules:
      m = rule.regex.match(cname)
      if m:
        hit = (rule, int(m.group(1)) if rule.stacked else None)
        break
    if hit is None:
      if any(p.search(cname) for p in carry):
        carried.append(name)
        continue
      known = any(r.regex.match(cname) for r in name_map.rules)  # a rule inactive for this config
      hint = "" if known else f" (no rule of --source={source_flag} maps it)"
      raise ConversionError(f"unexpected tensor {name} in {info.file}{hint}")
    rule, layer = hit
    if layer is not None and layer >= shapes[rule.targets[0]][0]:
      raise ConversionError(f"unexpected tensor {name} in {info.file}: layer {layer} but the config has "
                            f"{shapes[rule.targets[0]][0]} layers")
    if (rule.source, layer) in seen:
      raise ConversionError(f"tensors {seen[(rule.source, layer)]} and {name} in {source.path} are the same "
                            f"parameter ({rule.name(layer)})")
    seen[(rule.source, layer)] = name
    matches.append((name, rule, layer))
  defaults = []
  for rule in rules:
    n_layers = shapes[rule.targets[0]][0] if rule.stacked else None
    for layer in (range(n_layers) if rule.stacked else [None]):
      if (rule.source, layer) in seen:
        continue
      if rule.default:
        defaults.append((rule, layer))
        continue
      raise ConversionError(f"missing tensor {rule.name(layer)} in {source.path} "
                            f"(needed for {', '.join(rule.targets)})")
  wants = {rule.source: expected_source_shape(rule, shapes, cfg) for rule in rules}
  for name, rule, layer in matches:
    want = wants[rule.source]
    have = source.infos[name].shape
    if tuple(have) != want:
      raise ConversionError(f"tensor {name} in {source.infos[name].file} has shape {list(have)}, "
                            f"config expects {list(want)} (for {', '.join(rule.targets)})")
  return Plan(source, name_map, cfg, matches, carried, defaults)


def check_tied(p: Plan) -> None:
  """Refuses a source whose tied copy (e.g. transformers Whisper's proj_out.weight) differs from the tensor it
  repeats (the model has no separate output projection). Only pairs whose original is mapped are checked."""
  mapped = {name for name, _, _ in p.matches}
  for name, other in p.name_map.tied:
    if name in p.source.infos and other in mapped:
      a, b = p.source.read(name), p.source.read(other)
      if a.shape != b.shape or not np.array_equal(a, b, equal_nan=True):
        raise ConversionError(f"{name} in {p.source.infos[name].file} differs from {other}: untied output "
                              "projections are not supported (the model ties them to the token embedding)")


def allocate(shapes: dict[str, tuple[int, ...]], dtype: np.dtype, staging_dir: str | None) -> dict[str, np.ndarray]:
  """Output arrays: memory-mapped files under `staging_dir` (large models) or plain arrays if None."""
  arrays = {}
  for i, (path, shape) in enumerate(sorted(shapes.items())):
    if staging_dir is None:
      arrays[path] = np.zeros(shape, dtype)
    else:
      arrays[path] = np.memmap(os.path.join(staging_dir, f"{i:04d}.bin"), dtype=dtype, mode="w+", shape=shape)
  return arrays


def _write(arrays, filled, target: str, layer: int | None, value: np.ndarray) -> None:
  dst = arrays[target] if layer is None else arrays[target][layer]
  if value.ndim != dst.ndim or any(v > d for v, d in zip(value.shape, dst.shape)):
    raise AssertionError(f"{target}: value {value.shape} does not fit {dst.shape}")
  # The leading corner: the whole array, except in compose mode where a smaller vocabulary is grown.
  dst[tuple(slice(0, s) for s in value.shape)] = value  # numpy casts (round-to-nearest-even for bf16)
  checkpoint_io.release_pages(arrays[target])  # staging memmaps: written pages leave the RSS
  filled.add((target, layer))


def _default(rule: Rule, shape: tuple[int, ...]) -> np.ndarray:
  if rule.default == "sinusoids":
    return sinusoids(*shape)
  raise AssertionError(f"unknown default {rule.default!r}")


def fill(p: Plan, arrays: dict[str, np.ndarray], filled: set, log=None) -> None:
  """Streams the plan's tensors (grouped by file) into `arrays`; records (path, layer) in `filled`."""
  order = sorted(p.matches, key=lambda m: (p.source.infos[m[0]].file, m[0]))
  for k, (name, rule, layer) in enumerate(order):
    parts = transforms.get(rule.transform).forward(p.source.read(name), p.cfg)
    for target, part in zip(rule.targets, parts):
      _write(arrays, filled, target, layer, part)
    if log and (k + 1) % 100 == 0:
      log(f"  {k + 1}/{len(order)} tensors")
  for rule, layer in p.defaults:
    shape = arrays[rule.targets[0]].shape[1:] if rule.stacked else arrays[rule.targets[0]].shape
    _write(arrays, filled, rule.targets[0], layer, _default(rule, shape))


def check_filled(arrays: dict[str, np.ndarray], filled: set) -> None:
  for path, arr in arrays.items():
    layers = range(arr.shape[0]) if is_stacked(path) else [None]
    for layer in layers:
      if (path, layer) not in filled and (path, None) not in filled:
        raise ConversionError(f"parameter {path}" + (f" layer {layer}" if layer is not None else "")
                              + " was not produced by any source tensor")
