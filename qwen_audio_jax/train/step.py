"""Jitted train and eval steps with explicit in/out shardings and a donated state.

The loss is the mean cross-entropy over answer tokens (`loss_mask`) of the whole global batch:
micro-batch losses are summed weighted by their token counts, so gradient accumulation gives the
same loss and gradients as one big batch. Gradients are taken for the trainable part only. The loss is
chunked through the lm_head (`ModelFns.loss`): no [B, S, V] logits in the step, forward or backward.

A step whose loss or gradient norm is NaN/Inf is never applied: params, adapters and optimizer state
are returned unchanged, bit for bit; only `step` (and with it the data position and the step's RNG)
advances. Metric "nonfinite" is 1.0 on such a step; the loop logs the batch's example ids and, per
`train.nonfinite_policy`, halts at once ("halt") or after `train.max_nonfinite_in_a_row` in a row ("skip").
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from qwen_audio_jax.sharding import partition
from qwen_audio_jax.train import freeze, grad_stats
from qwen_audio_jax.train.state import Plan

METRIC_KEYS = ("loss", "tokens", "grad_norm", "lr", "input_tokens", "audio_frames", "nonfinite")  # always
# plus, per tower with trainable leaves, "grad_norm/<tower>" (scalar) and "grad_norms/<tower>" (vector);
# see `grad_stats.tower_grad_norms`.


def _micro_batches(batch: dict, accum: int, mesh) -> dict:
  """[B, ...] → [accum, B/accum, ...]; micro-batch j takes examples j, j+accum, ... so that each
  device keeps its own rows (no data movement). Audio rows follow their examples."""
  b = batch["input_ids"].shape[0]
  if b % accum:
    raise ValueError(f"global batch {b} is not divisible by train.grad_accum_steps={accum}")
  spec = NamedSharding(mesh, P(None, partition.BATCH_AXES))
  out = {}
  for k, x in batch.items():
    per_example = x.shape[0] // b
    y = x.reshape((b // accum, accum, per_example) + x.shape[1:])
    y = jnp.swapaxes(y, 0, 1).reshape((accum, (b // accum) * per_example) + x.shape[1:])
    out[k] = jax.lax.with_sharding_constraint(y, spec)
  return out


def _augment(batch: dict, rng, specaug) -> dict:
  if specaug is None or batch.get("audio_mel") is None:
    return batch
  mel_frames = 2 * batch["audio_lengths"]  # encoder frames → mel frames (upper bound)
  return dict(batch, audio_mel=specaug(rng, batch["audio_mel"], mel_frames))


def make_loss_and_grads(plan: Plan, accum: int = 1, specaug=None, with_stats: bool = False) -> Callable:
  """(trainable, frozen, batch, rng) -> ((loss, tokens), grads): the core of the train step. `with_stats`:
  ((loss, tokens, stats), grads), `stats` = the model's extra scalars (MoWE router statistics,
  `ModelFns.loss_and_stats`; {} otherwise)."""
  fns = plan.fns

  def summed(trainable, frozen, mb, rng):
    params, lora = plan.model_inputs(trainable, frozen)
    if fns.loss_and_stats is None:
      loss, n = fns.loss(params, mb, train=True, rngs={"dropout": rng}, lora=lora)
      return loss * n, (n, {})
    loss, n, stats = fns.loss_and_stats(params, mb, train=True, rngs={"dropout": rng}, lora=lora)
    return loss * n, (n, stats)

  grad_fn = jax.value_and_grad(summed, has_aux=True)

  def loss_and_grads(trainable, frozen, batch, rng):
    k_aug, k_model = jax.random.split(rng)
    batch = _augment(batch, k_aug, specaug)
    if accum == 1:
      (total, (n, stats)), grads = grad_fn(trainable, frozen, batch, k_model)
    else:
      micro = _micro_batches(batch, accum, plan.mesh)
      zeros = jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, jnp.float32), trainable)

      def body(carry, xs):
        acc_total, acc_n, acc_g = carry
        mb, key = xs
        (total, (n, stats)), g = grad_fn(trainable, frozen, mb, key)
        acc_g = jax.tree_util.tree_map(lambda a, b: a + b.astype(jnp.float32), acc_g, g)
        return (acc_total + total, acc_n + n, acc_g), stats

      keys = jax.random.split(k_model, accum)
      init = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), zeros)
      (total, n, grads), stats = jax.lax.scan(body, init, (micro, keys))
      stats = jax.tree_util.tree_map(lambda x: jnp.mean(x, axis=0), stats)  # mean over micro-batches
    denom = jnp.maximum(n, 1.0)
    grads = jax.tree_util.tree_map(lambda g, p: (g / denom).astype(p.dtype), grads, trainable)
    return ((total / denom, n, stats) if with_stats else (total / denom, n)), grads

  return loss_and_grads


def make_train_step(plan: Plan, train_cfg, schedule: optax.Schedule | None = None, specaug=None):
  """A function (state, batch) -> (state, metrics); jitted, state donated, sharded as planned."""
  loss_and_grads = make_loss_and_grads(plan, int(train_cfg.get("grad_accum_steps", 1)), specaug, with_stats=True)

  def step(state, batch):
    rng = jax.random.fold_in(state["rng"], state["step"])
    trainable, frozen = plan.trainable(state), plan.frozen(state)
    (loss, n, stats), grads = loss_and_grads(trainable, frozen, batch, rng)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = plan.optimizer.update(grads, state["opt_state"], trainable)
    trainable = optax.apply_updates(trainable, updates)
    new = dict(state, step=state["step"] + 1, opt_state=opt_state,
               params=freeze.merge(frozen, trainable["params"]))
    if plan.use_lora:
      new["lora"] = trainable["lora"]
    for k in ("params", "lora", "opt_state"):  # a non-finite step keeps the old leaves, bit for bit
      if k in new:
        new[k] = jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new[k], state[k])
    lr = schedule(state["step"]) if schedule is not None else jnp.zeros(())
    metrics = {"loss": loss, "tokens": n, "grad_norm": grad_norm, "lr": jnp.asarray(lr),
               "nonfinite": 1.0 - finite.astype(jnp.float32),
               "input_tokens": jnp.sum(batch["attention_mask"]).astype(jnp.float32),
               "audio_frames": jnp.sum(batch["audio_lengths"]).astype(jnp.float32)
               if "audio_lengths" in batch else jnp.zeros(()),
               **grad_stats.tower_grad_norms(grads), **stats}
    return new, metrics

  return _jit(plan, step, donate=True)


def make_eval_step(plan: Plan):
  """(state, batch) -> {"loss_sum", "tokens"} without augmentation, train=False."""
  fns = plan.fns

  def step(state, batch):
    params, lora = plan.model_inputs(plan.trainable(state), plan.frozen(state))
    loss, n = fns.loss(params, batch, train=False, lora=lora)
    return {"loss_sum": loss * n, "tokens": n}

  return _jit(plan, step, donate=False)


def _jit(plan: Plan, fn, donate: bool):
  replicated = NamedSharding(plan.mesh, P())
  data = partition.batch_sharding(plan.mesh)
  out_state = (plan.shardings,) if donate else ()
  jitted = jax.jit(fn, in_shardings=(plan.shardings, data),
                   out_shardings=out_state + (replicated,) if donate else replicated,
                   donate_argnums=(0,) if donate else ())

  def call(state, batch):
    with partition.activation_context(plan.mesh):
      return jitted(state, batch)

  call.jitted = jitted
  return call
