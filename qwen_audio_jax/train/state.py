"""The train state (a plain dict pytree) and its creation, already sharded.

state = {"step": int32[], "rng": uint32[2] (raw key), "params": model params,
         "lora": adapters (only when LoRA is on), "opt_state": optimizer state of the trainable part}

`Plan` holds everything static about a run's state: which leaves train, the LoRA scale, the abstract
shapes and the shardings. The state is created by one jitted init whose outputs are sharded as
planned, so no host ever holds an unsharded copy.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from qwen_audio_jax.sharding import partition
from qwen_audio_jax.train import freeze, lora as lora_lib
from qwen_audio_jax.train.model_fns import ModelFns


@dataclasses.dataclass(frozen=True)
class Plan:
  fns: ModelFns
  optimizer: optax.GradientTransformation
  mask: dict  # {param path tuple: trainable}
  lora_patterns: tuple[str, ...]
  lora_rank: int
  lora_scale: float
  mesh: Mesh
  abstract: Any  # ShapeDtypeStruct tree of the state
  shardings: Any  # NamedSharding tree of the state

  @property
  def use_lora(self) -> bool:
    return bool(self.lora_patterns)

  def trainable(self, state_or_parts: dict) -> dict:
    """The differentiated part: {"params": trainable params, "lora": adapters}."""
    tr, _ = freeze.split(state_or_parts["params"], self.mask)
    out = {"params": tr}
    if self.use_lora:
      out["lora"] = state_or_parts["lora"]
    return out

  def frozen(self, state: dict) -> dict:
    return freeze.split(state["params"], self.mask)[1]

  def model_inputs(self, trainable: dict, frozen: dict) -> tuple[dict, dict | None]:
    """(params, lora) for the forward pass: the whole param tree, and the model's "lora" variable
    collection (adapters applied as a side path in each adapted layer; None without LoRA)."""
    params = freeze.merge(frozen, trainable["params"])
    return params, (lora_lib.collection(trainable["lora"], self.lora_scale) if self.use_lora else None)

  def merged_params(self, state: dict) -> dict:
    """Params with the adapters folded in (W + alpha/r · A @ B), e.g. for a merged export."""
    return lora_lib.merge(state["params"], state["lora"], self.lora_scale) if self.use_lora else state["params"]


def _init_fn(fns: ModelFns, optimizer, mask, lora_patterns, lora_rank):
  def init(rng, params=None):
    k_model, k_lora, k_train = jax.random.split(rng, 3)
    params = fns.init(k_model) if params is None else params
    state = {"step": jnp.zeros((), jnp.int32), "rng": k_train, "params": params}
    trainable = {"params": freeze.split(params, mask)[0]}
    if lora_patterns:
      state["lora"] = trainable["lora"] = lora_lib.init(k_lora, params, lora_patterns, lora_rank)
    state["opt_state"] = optimizer.init(trainable)
    return state
  return init


def make_plan(fns: ModelFns, optimizer, mesh: Mesh, train_cfg, lora_cfg=None) -> Plan:
  """Works out shapes and shardings of the state without allocating it."""
  lora_on = bool(lora_cfg and lora_cfg.get("enabled", False))
  patterns = tuple(lora_cfg.targets) if lora_on else ()
  rank = int(lora_cfg.rank) if lora_on else 0
  param_shapes = jax.eval_shape(fns.init, jax.random.PRNGKey(0))
  mask = freeze.trainable_mask(param_shapes, train_cfg.get("freeze", ()), train_cfg.get("trainable", ()))
  init = _init_fn(fns, optimizer, mask, patterns, rank)
  abstract = jax.eval_shape(init, jax.random.PRNGKey(0))

  replicated = NamedSharding(mesh, P())
  param_sh = partition.logical_to_shardings(fns.logical_axes, abstract["params"], mesh)
  shardings = {"step": replicated, "rng": replicated, "params": param_sh}
  trainable_abs = {"params": freeze.split(abstract["params"], mask)[0]}
  trainable_sh = {"params": freeze.split(param_sh, mask)[0]}
  if lora_on:
    lora_logical = lora_lib.logical_axes(abstract["lora"], fns.logical_axes)
    shardings["lora"] = partition.logical_to_shardings(lora_logical, abstract["lora"], mesh)
    trainable_abs["lora"], trainable_sh["lora"] = abstract["lora"], shardings["lora"]
  shardings["opt_state"] = partition.follow_params(abstract["opt_state"], trainable_abs, trainable_sh, mesh)
  scale = lora_lib.scale(rank, lora_cfg.alpha) if lora_on else 0.0
  return Plan(fns=fns, optimizer=optimizer, mask=mask, lora_patterns=patterns, lora_rank=rank,
              lora_scale=scale, mesh=mesh, abstract=abstract, shardings=shardings)


def create(plan: Plan, seed: int, params: Any = None) -> dict:
  """Fresh state, created directly in its sharded layout; `params` (sharded as planned, e.g. restored
  from a converted checkpoint) replace the random init."""
  init = _init_fn(plan.fns, plan.optimizer, plan.mask, plan.lora_patterns, plan.lora_rank)
  rng = jax.random.PRNGKey(seed)
  with partition.activation_context(plan.mesh):
    if params is None:
      return jax.jit(init, out_shardings=plan.shardings)(rng)
    return jax.jit(init, in_shardings=(NamedSharding(plan.mesh, P()), plan.shardings["params"]),
                   out_shardings=plan.shardings)(rng, params)
