"""The model as the trainer sees it: init, forward on a batch, logical axes, loss.

Built from the run config's `model` block: a preset name plus field overrides (nested for the
encoder/decoder), e.g. `preset="tiny-qwen-audio", overrides={"decoder": {"n_layers": 4}}`.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, Mapping

import jax

from qwen_audio_jax.model import config as model_config

BATCH_KEYS = ("input_ids", "attention_mask", "targets", "loss_mask", "audio_mel", "audio_lengths")


@dataclasses.dataclass(frozen=True)
class ModelFns:
  """`lora`: the model's "lora" variable collection (`train.lora.collection`) or None."""

  cfg: Any
  init: Callable[[jax.Array], Any]  # rng -> params (plain arrays)
  forward: Callable[..., jax.Array]  # (params, batch, train, rngs, lora) -> fp32 logits [B, S, V]
  logical_axes: Any  # params-shaped tree of PartitionSpecs of logical names
  # (params, batch, train, rngs, lora) -> (mean loss over loss_mask, token count); blocked through the
  # lm_head (model.chunked_loss), so [B, S, V] logits never exist.
  loss: Callable[..., tuple[jax.Array, jax.Array]]


def _deep_update(base: dict, overrides: Mapping) -> dict:
  out = copy.deepcopy(base)
  for k, v in overrides.items():
    if isinstance(v, Mapping) and isinstance(out.get(k), dict):
      out[k] = _deep_update(out[k], v)
    else:
      out[k] = v
  return out


def resolve_model_config(model_cfg) -> model_config.ModelConfig:
  """`model_cfg.preset` + `model_cfg.overrides` → ModelConfig (unknown fields raise)."""
  preset = model_cfg["preset"]
  if preset not in model_config.PRESETS:
    raise KeyError(f"config model.preset={preset!r} is not a preset; known: "
                   f"{', '.join(sorted(model_config.PRESETS))}")
  overrides = model_cfg.get("overrides") or {}
  overrides = overrides.to_dict() if hasattr(overrides, "to_dict") else dict(overrides)
  try:
    return model_config.from_dict(_deep_update(model_config.to_dict(model_config.PRESETS[preset]), overrides))
  except (KeyError, TypeError) as e:
    raise KeyError(f"config model.overrides: {e}") from None


def build(cfg: model_config.ModelConfig) -> ModelFns:
  """ModelFns for the Qwen-Audio family model of `qwen_audio_jax.model`."""
  from qwen_audio_jax import model as model_lib  # pylint: disable=import-outside-toplevel

  module = model_lib.Model(cfg)

  def init(rng):
    return model_lib.init_params(cfg, rng)

  def variables(params, lora):
    return {"params": params} if lora is None else {"params": params, "lora": lora}

  def forward(params, batch, train: bool, rngs=None, lora=None, output: str = "logits"):
    return module.apply(variables(params, lora), batch["input_ids"], batch["attention_mask"],
                        batch.get("audio_mel"), batch.get("audio_lengths"), train=train, output=output,
                        rngs=rngs or {})

  def loss(params, batch, train: bool, rngs=None, lora=None):
    hidden = forward(params, batch, train, rngs, lora, output="hidden")
    head = dict(params["decoder"]["lm_head"], **(lora or {}).get("decoder", {}).get("lm_head", {}))
    return model_lib.chunked_loss(hidden, head, batch["targets"], batch["loss_mask"], cfg)

  return ModelFns(cfg=cfg, init=init, forward=forward, logical_axes=model_lib.logical_axes(cfg), loss=loss)
