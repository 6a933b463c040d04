"""The model as the trainer sees it: init, forward on a batch, logical axes, loss.

Built from the run config's `model` block (`train.defaults.model_block`): a preset name plus the
fields that are set, e.g. `preset="tiny-qwen-audio", decoder.n_layers=4`.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from qwen_audio_jax.data.records import TASKS
from qwen_audio_jax.model import config as model_config, mowe as mowe_lib

FLOAT_DTYPES = ("float32", "bfloat16", "float16")
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
  # (params, batch, train, rngs, lora) -> (training objective, token count, {name: scalar}): the loss plus
  # MoWE's weighted routing loss (cfg.mowe.aux_weight), and router statistics for the logs ({} without MoWE).
  loss_and_stats: Callable[..., tuple[jax.Array, jax.Array, dict]] | None = None


def _deep_update(base: dict, overrides: Mapping) -> dict:
  out = copy.deepcopy(base)
  for k, v in overrides.items():
    if isinstance(v, Mapping) and isinstance(out.get(k), dict):
      out[k] = _deep_update(out[k], v)
    else:
      out[k] = v
  return out


def _set_fields(block) -> dict:
  """The fields of a model block that are set (not None), as a nested dict; legacy `overrides` first."""
  plain = block.to_dict() if hasattr(block, "to_dict") else dict(block)
  out = _deep_update({}, plain.pop("overrides", None) or {})
  plain.pop("preset", None)
  for key, value in plain.items():
    if isinstance(value, Mapping):
      out[key] = _deep_update(out.get(key) or {}, {k: v for k, v in value.items() if v is not None})
    elif value is not None:
      out[key] = value
  return out


def resolve_model_config(model_cfg) -> model_config.ModelConfig:
  """`model_cfg.preset` + the block's set fields → ModelConfig (unknown fields, bad values raise)."""
  preset = model_cfg["preset"]
  if preset not in model_config.PRESETS:
    raise KeyError(f"config model.preset={preset!r} is not a preset; known: "
                   f"{', '.join(sorted(model_config.PRESETS))}")
  base = model_config.to_dict(model_config.PRESETS[preset])
  fields = _set_fields(model_cfg)
  for part in ("encoder", "decoder", "text_decoder"):
    if fields.get(part) and base.get(part) is None:
      raise KeyError(f"config model.{part}.*: preset {preset!r} has no {part}")
    if part in fields and not fields[part]:
      del fields[part]
  try:
    cfg = model_config.from_dict(_deep_update(base, fields))
  except (KeyError, TypeError) as e:
    raise KeyError(f"config model: {e}") from None
  _check_choices(cfg)
  if cfg.mowe is not None or cfg.encoder_petl is not None:  # their settings are checked before any compile
    from qwen_audio_jax.model import multimodal  # pylint: disable=import-outside-toplevel
    try:
      multimodal.check_config(cfg)
    except ValueError as e:
      raise KeyError(f"config model: {e}") from None
  return cfg


def _check_choices(cfg: model_config.ModelConfig) -> None:
  """Literal-typed fields and dtypes hold one of their allowed values (a typo must not pass)."""
  for prefix, obj in (("", cfg), ("encoder.", cfg.encoder), ("decoder.", cfg.decoder),
                      ("text_decoder.", cfg.text_decoder)):
    if obj is None:
      continue
    for name, hint in typing.get_type_hints(type(obj)).items():
      allowed = typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else None
      if allowed and name != "family" and getattr(obj, name) not in allowed:
        raise KeyError(f"config model.{prefix}{name}={getattr(obj, name)!r}; use one of {', '.join(allowed)}")
  for name in ("dtype", "param_dtype", "encoder_param_dtype", "decoder_param_dtype"):
    if getattr(cfg, name) not in FLOAT_DTYPES and not (name.endswith("_param_dtype") and getattr(cfg, name) is None):
      raise KeyError(f"config model.{name}={getattr(cfg, name)!r}; use one of {', '.join(FLOAT_DTYPES)}")


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

  def head_loss(params, lora, hidden, batch):
    head = dict(params["decoder"]["lm_head"], **(lora or {}).get("decoder", {}).get("lm_head", {}))
    return model_lib.chunked_loss(hidden, head, batch["targets"], batch["loss_mask"], cfg)

  def loss(params, batch, train: bool, rngs=None, lora=None):
    return head_loss(params, lora, forward(params, batch, train, rngs, lora, output="hidden"), batch)

  def loss_and_stats(params, batch, train: bool, rngs=None, lora=None):
    if not mowe_lib.enabled(cfg) or batch.get("audio_mel") is None:
      return (*loss(params, batch, train, rngs, lora), {})
    hidden, state = module.apply(variables(params, lora), batch["input_ids"], batch["attention_mask"],
                                 batch["audio_mel"], batch.get("audio_lengths"), train=train, output="hidden",
                                 rngs=rngs or {}, mutable=["intermediates"])
    ce, n = head_loss(params, lora, hidden, batch)
    present = None if batch.get("audio_lengths") is None else batch["audio_lengths"] > 0  # empty slots skipped
    task = batch.get("task_index")
    if task is not None:  # one task id per example row; an example's audio rows are consecutive
      rows = batch["audio_mel"].shape[0]
      task = jnp.repeat(task, rows // task.shape[0], total_repeat_length=rows)
    stats = mowe_lib.router_stats(state["intermediates"], len(cfg.mowe.weak), present, task, len(TASKS))
    aux = stats.get("mowe/aux_loss", jnp.zeros((), jnp.float32))
    return ce + cfg.mowe.aux_weight * aux, n, stats

  return ModelFns(cfg=cfg, init=init, forward=forward, logical_axes=model_lib.logical_axes(cfg), loss=loss,
                  loss_and_stats=loss_and_stats)
