"""The registry of steps `plan` compiles: name → builder(ctx) → PlannedStep.

"train" is the real train step (train/step.py make_train_step on the state of train/state.py make_plan),
so model, loss and optimizer changes show up in the plan without touching this package. "prefill" is
the first step of generation: the model's forward over the prompt, writing a KV cache, returning the
last position's logits. A generation engine can register its own steps (e.g. one-token decode) with
`@register("decode")`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
from jax.sharding import NamedSharding, PartitionSpec as P

from qwen_audio_jax.plan import inputs
from qwen_audio_jax.sharding import partition
from qwen_audio_jax.train import metrics as metrics_lib


@dataclasses.dataclass(frozen=True)
class Context:
  cfg: Any  # the run config (ml_collections)
  mcfg: Any  # the resolved ModelConfig
  plan: Any  # train/state.py Plan (mesh, abstract state, shardings)
  schedule: Any
  gen: dict  # generation sizes: batch, prompt_len, new_tokens


@dataclasses.dataclass(frozen=True)
class PlannedStep:
  name: str
  jitted: Any  # a jax.jit-wrapped function
  args: tuple  # abstract arguments (ShapeDtypeStructs with shardings)
  model_flops: float  # over the global batch
  shape: dict  # what was planned: batch, seq_len, audio rows, mel frames, ...


STEPS: dict[str, Callable[[Context], PlannedStep]] = {}


def register(name: str):
  def deco(fn):
    STEPS[name] = fn
    return fn
  return deco


@register("train")
def train_step(ctx: Context) -> PlannedStep:
  from qwen_audio_jax.train import specaugment, step as step_lib  # pylint: disable=import-outside-toplevel
  cfg, mcfg, plan = ctx.cfg, ctx.mcfg, ctx.plan
  shape = inputs.batch_shape(cfg, mcfg)
  inputs.check_divisible(shape.batch, plan.mesh, "config train.batch_size")
  accum = int(cfg.train.get("grad_accum_steps", 1))
  if shape.batch % accum or (shape.batch // accum) % (plan.mesh.shape["data"] * plan.mesh.shape["fsdp"]):
    raise inputs.PlanInputError(f"config train.batch_size={shape.batch} / grad_accum_steps={accum} does not split "
                                "evenly over the data x fsdp devices")
  step = step_lib.make_train_step(plan, cfg.train, ctx.schedule, specaugment.from_config(cfg.train.specaugment))
  state = inputs.with_shardings(plan.abstract, plan.shardings)
  batch = inputs.abstract_batch(shape, plan.mesh)
  mult = metrics_lib.tower_multipliers(plan.mask, plan.use_lora)
  flops = metrics_lib.step_flops(mcfg, shape.batch * shape.seq_len, shape.seq_len, shape.audio_rows,
                                 shape.mel_frames, mult)
  return PlannedStep("train", step.jitted, (state, batch), flops,
                     dict(batch=shape.batch, seq_len=shape.seq_len, audio_rows=shape.audio_rows,
                          mel_frames=shape.mel_frames, grad_accum_steps=accum, remat=mcfg.remat_policy,
                          tokens=shape.batch * shape.seq_len, tower_multipliers=list(mult)))


@register("prefill")
def prefill_step(ctx: Context) -> PlannedStep:
  """Prompt forward with a KV cache of prompt_len + new_tokens slots; last-position logits."""
  from qwen_audio_jax.model import Model, abstract_cache  # pylint: disable=import-outside-toplevel
  cfg, mcfg, plan = ctx.cfg, ctx.mcfg, ctx.plan
  mesh = plan.mesh
  rows, prompt, new = int(ctx.gen["batch"]), int(ctx.gen["prompt_len"]), int(ctx.gen["new_tokens"])
  inputs.check_divisible(rows, mesh, "--gen_batch")
  train_shape = inputs.batch_shape(cfg, mcfg)
  per_row = train_shape.audio_rows // train_shape.batch if train_shape.audio_rows else 0
  shape = inputs.BatchShape(rows, prompt, rows * per_row, train_shape.mel_frames, train_shape.n_mels)
  batch = inputs.abstract_batch(shape, mesh)
  del batch["targets"], batch["loss_mask"]
  cache = abstract_cache(mcfg, rows, prompt + new)
  cache_sh = inputs.cache_shardings(cache, mesh)
  params = inputs.with_shardings(plan.abstract["params"], plan.shardings["params"])
  model = Model(mcfg)

  def prefill(params, cache, batch):
    return model.apply({"params": params}, batch["input_ids"], batch["attention_mask"], batch.get("audio_mel"),
                       batch.get("audio_lengths"), cache=cache, output="last_logits")

  logits_sh = NamedSharding(mesh, P(partition.BATCH_AXES))
  jitted = jax.jit(prefill, in_shardings=(plan.shardings["params"], cache_sh, partition.batch_sharding(mesh)),
                   out_shardings=(logits_sh, cache_sh), donate_argnums=(1,))
  flops = metrics_lib.step_flops(mcfg, rows * prompt, prompt, shape.audio_rows, shape.mel_frames, (1, 1))
  flops -= rows * (prompt - 1) * 2 * mcfg.decoder.d_model * mcfg.decoder.vocab_size  # lm_head: last column only
  return PlannedStep("prefill", jitted, (params, inputs.with_shardings(cache, cache_sh), batch), flops,
                     dict(batch=rows, seq_len=prompt, cache_len=prompt + new, audio_rows=shape.audio_rows,
                          mel_frames=shape.mel_frames, tokens=rows * prompt))
