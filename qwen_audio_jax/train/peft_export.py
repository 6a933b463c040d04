"""LoRA adapters → an HF-PEFT adapter directory (adapter_model.safetensors + adapter_config.json).

Module names follow the hub checkpoints: Qwen-Audio v1 (`transformer.h.N.attn.c_attn`, ...) or
Qwen2-Audio as transformers 5.x names its modules (`model.language_model.layers.N.self_attn.q_proj`,
...; the hub checkpoint's `language_model.model.layers...` names are what the weights load from, not
what PEFT adapts). Keys are
`base_model.model.<module>.lora_A.weight` [r, in] and `...lora_B.weight` [out, r] (PyTorch layout);
PEFT adds (lora_alpha / r) · B @ A to the module's weight [out, in].
Qwen-Audio v1 fuses q/k/v into `c_attn` (rows q|k|v): the q/k/v adapters become one adapter of rank
r × (number of adapted projections), with A stacked and B block-diagonal, which is the same update;
`rank_pattern`/`alpha_pattern` keep its scale equal to alpha / r. A model with the fused layout
(`DecoderConfig.fused_qkv`) has one `qkv` adapter: it is `c_attn`'s adapter as is (rank r), and for the
Qwen2 naming three adapters sharing its A, each with its column block of B.
"""

from __future__ import annotations

import json
import os
import re
from typing import Mapping

import numpy as np
from flax import traverse_util

_V1 = {
    "decoder/layers/attn/qkv": "transformer.h.{i}.attn.c_attn",  # fused layout: the same module, rank r
    "decoder/layers/attn/o": "transformer.h.{i}.attn.c_proj",
    "decoder/layers/mlp/gate": "transformer.h.{i}.mlp.w2",
    "decoder/layers/mlp/up": "transformer.h.{i}.mlp.w1",
    "decoder/layers/mlp/down": "transformer.h.{i}.mlp.c_proj",
    "decoder/lm_head": "lm_head",
    "audio_encoder/layers/attn/query": "transformer.audio.blocks.{i}.attn.query",
    "audio_encoder/layers/attn/key": "transformer.audio.blocks.{i}.attn.key",
    "audio_encoder/layers/attn/value": "transformer.audio.blocks.{i}.attn.value",
    "audio_encoder/layers/attn/out": "transformer.audio.blocks.{i}.attn.out",
    "audio_encoder/layers/mlp/fc1": "transformer.audio.blocks.{i}.mlp.0",
    "audio_encoder/layers/mlp/fc2": "transformer.audio.blocks.{i}.mlp.2",
    "audio_projector": "transformer.audio.proj",
}
_FUSED = "decoder/layers/attn/qkv"  # the fused q|k|v layout (DecoderConfig.fused_qkv)
_V1_FUSED = ("decoder/layers/attn/q", "decoder/layers/attn/k", "decoder/layers/attn/v")
_QWEN2 = {  # module names of transformers 5.x Qwen2AudioForConditionalGeneration (what PEFT adapts)
    **{f"decoder/layers/attn/{a}": f"model.language_model.layers.{{i}}.self_attn.{a}_proj" for a in "qkvo"},
    **{f"decoder/layers/mlp/{m}": f"model.language_model.layers.{{i}}.mlp.{m}_proj"
       for m in ("gate", "up", "down")},
    "decoder/lm_head": "lm_head",
    **{f"audio_encoder/layers/attn/{a}": f"model.audio_tower.layers.{{i}}.self_attn.{b}_proj"
       for a, b in (("query", "q"), ("key", "k"), ("value", "v"), ("out", "out"))},
    "audio_encoder/layers/mlp/fc1": "model.audio_tower.layers.{i}.fc1",
    "audio_encoder/layers/mlp/fc2": "model.audio_tower.layers.{i}.fc2",
    "audio_projector": "model.multi_modal_projector.linear",
}
NAMINGS = ("qwen-audio", "qwen2-audio")


class PeftExportError(ValueError):
  """An adapted module has no counterpart in the chosen HF naming."""


def _adapters(lora: Mapping, vocab_size: int | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{module path: (A [L?, in, r], B [L?, r, out])} as numpy; lm_head's B without padded vocab columns."""
  flat = traverse_util.flatten_dict(dict(lora))
  out = {}
  for path in flat:
    if path[-1] == "lora_a":
      mod = "/".join(map(str, path[:-1]))
      b = np.asarray(flat[path[:-1] + ("lora_b",)], np.float32)
      if mod == "decoder/lm_head" and vocab_size is not None:
        b = b[..., :vocab_size]
      a = np.asarray(flat[path], np.float32)
      out[mod] = (a, b.reshape(*b.shape[:a.ndim - 1], -1))  # fused q|k|v B [.., r, 3, w] -> [.., r, 3w]
  return out


def _layers(mod: str, a: np.ndarray, b: np.ndarray):
  """Yields (layer index or None, A [in, r], B [r, out])."""
  if "/layers/" in mod:
    for i in range(a.shape[0]):
      yield i, a[i], b[i]
  else:
    yield None, a, b


def peft_tensors(lora: Mapping, rank: int, alpha: float, naming: str, vocab_size: int | None = None):
  """({safetensors key: fp32 array}, adapter_config dict). `vocab_size`: the model's true vocabulary
  (an lm_head adapter of a model with padded vocabulary rows is cut to it)."""
  if naming not in NAMINGS:
    raise PeftExportError(f"lora.export_naming={naming!r}; expected one of {NAMINGS}")
  table = _V1 if naming == "qwen-audio" else _QWEN2
  ads = _adapters(lora, vocab_size)
  tensors, modules, rank_pattern, alpha_pattern = {}, set(), {}, {}

  def put(template, i, a_t, b_t):  # a_t [r, in], b_t [out, r]
    name = template.format(i=i)
    tensors[f"base_model.model.{name}.lora_A.weight"] = np.ascontiguousarray(a_t)
    tensors[f"base_model.model.{name}.lora_B.weight"] = np.ascontiguousarray(b_t)
    modules.add(re.escape(template.format(i="IDX")).replace("IDX", r"\d+"))

  fused = [m for m in _V1_FUSED if m in ads] if naming == "qwen-audio" else []
  for mod, (a, b) in ads.items():
    if mod in fused:
      continue
    if mod == _FUSED and naming == "qwen2-audio":  # one shared A; B's column blocks q | k | v
      width = b.shape[-1] // 3
      for i, a_l, b_l in _layers(mod, a, b):
        for j, part in enumerate("qkv"):
          put(table[f"decoder/layers/attn/{part}"], i, a_l.T, b_l[:, j * width:(j + 1) * width].T)
      continue
    if mod not in table:
      raise PeftExportError(f"LoRA on {mod!r} has no {naming} module name (known: {sorted(table)})")
    for i, a_l, b_l in _layers(mod, a, b):
      put(table[mod], i, a_l.T, b_l.T)
  if fused:
    widths = {ads[m][1].shape[-1] for m in fused}
    if len(widths) != 1:
      raise PeftExportError(f"c_attn fusion needs equal q/k/v widths, got {sorted(widths)}")
    width, (n_layers, _, r) = widths.pop(), ads[fused[0]][0].shape
    for i in range(n_layers):
      a_f = np.concatenate([ads[m][0][i].T for m in fused], axis=0)  # [r * k, in]
      b_f = np.zeros((3 * width, r * len(fused)), np.float32)  # rows q | k | v
      for j, m in enumerate(fused):
        row = _V1_FUSED.index(m) * width
        b_f[row:row + width, j * r:(j + 1) * r] = ads[m][1][i].T
      put("transformer.h.{i}.attn.c_attn", i, a_f, b_f)
    rank_pattern["c_attn"] = r * len(fused)
    alpha_pattern["c_attn"] = float(alpha) * len(fused)
  config = {
      "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": int(rank), "lora_alpha": float(alpha),
      "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False, "use_rslora": False,
      "init_lora_weights": True, "inference_mode": True, "modules_to_save": None,
      "target_modules": "|".join(sorted(modules)), "rank_pattern": rank_pattern,
      "alpha_pattern": alpha_pattern, "base_model_name_or_path": {
          "qwen-audio": "Qwen/Qwen-Audio", "qwen2-audio": "Qwen/Qwen2-Audio-7B"}[naming],
  }
  return tensors, config


def export(lora: Mapping, out_dir: str, *, rank: int, alpha: float, naming: str, vocab_size: int | None = None) -> str:
  """Writes `out_dir/adapter_model.safetensors` and `adapter_config.json`; returns out_dir."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel

  tensors, config = peft_tensors(lora, rank, alpha, naming, vocab_size)
  os.makedirs(out_dir, exist_ok=True)
  save_file(tensors, os.path.join(out_dir, "adapter_model.safetensors"), metadata={"format": "pt"})
  with open(os.path.join(out_dir, "adapter_config.json"), "w") as f:
    json.dump(config, f, indent=2, sort_keys=True)
  return out_dir
