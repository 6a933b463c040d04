"""Building blocks shared by both towers: the precision policy, dense/norm layers with logical axes.

Precision policy (README "Precision policy"): parameters are stored in `cfg.param_dtype`; matmuls and
activations run in `cfg.dtype` with `cfg.matmul_precision`; norms, softmax, logits and the loss are
computed in float32. Every parameter carries logical axis names (see `sharding/rules.py`).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from qwen_audio_jax.model.config import ModelConfig

Initializer = Callable[..., jax.Array]
# Names of the residual stream at block boundaries (both towers).
ACTIVATION_AXES = ("activation_batch", "activation_length", "activation_embed")
DEFAULT_INIT = nn.initializers.normal(stddev=0.02)
LORA = "lora"  # variable collection of LoRA factors (read by `Linear`, scanned like the params)

_PRECISIONS = {"default": None, "high": jax.lax.Precision.HIGH, "highest": jax.lax.Precision.HIGHEST}


def compute_dtype(cfg: ModelConfig) -> jnp.dtype:
  return jnp.dtype(cfg.dtype)


def param_dtype(cfg: ModelConfig) -> jnp.dtype:
  return jnp.dtype(cfg.param_dtype)


def matmul_precision(cfg: ModelConfig) -> jax.lax.Precision | None:
  """`"default"` maps to None so that `jax_default_matmul_precision` still applies."""
  if cfg.matmul_precision not in _PRECISIONS:
    raise ValueError(f"ModelConfig.matmul_precision must be one of {sorted(_PRECISIONS)}, "
                     f"got {cfg.matmul_precision!r}")
  return _PRECISIONS[cfg.matmul_precision]


def partitioned(init: Initializer, names: Sequence[str | None]) -> Initializer:
  return nn.with_logical_partitioning(init, tuple(names))


def constrain(x: jax.Array, names: Sequence[str | None] = ACTIVATION_AXES) -> jax.Array:
  """Logical sharding constraint on an activation (a no-op without a mesh and rules)."""
  return nn.with_logical_constraint(x, tuple(names))


def dense(x: jax.Array, kernel: jax.Array, cfg: ModelConfig, out_dtype: Any = None,
          lora: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
  """x @ kernel (+ (x @ A) @ B for lora = (A, B)) with operands in the compute dtype; `out_dtype` is the
  accumulator type (float32 logits from bf16 operands). The LoRA path stores only [..., r]."""
  dtype = compute_dtype(cfg)

  def dot(u, w):
    return jax.lax.dot_general(u.astype(dtype), w.astype(dtype), (((u.ndim - 1,), (0,)), ((), ())),
                               precision=matmul_precision(cfg), preferred_element_type=out_dtype)

  y = dot(x, kernel)
  return y if lora is None else y + dot(dot(x, lora[0]), lora[1])


class Linear(nn.Module):
  """y = x @ kernel (+ bias), kernel [in, *features] with logical names `axes` (one per kernel dim);
  matmul numerics of `dense`. A tuple `features` (the fused q|k|v kernel [in, 3, width]) gives y [..., *features].

  LoRA: when the `LORA` variable collection holds `lora_a` [in, r] and `lora_b` [r, out] for this module,
  y += (x @ lora_a) @ lora_b, a low-rank side path (no merged kernel); `lora_b` carries the alpha/r scale
  (train/lora.py `collection` builds it). Without that collection the layer is a plain Dense.
  """

  features: int | tuple[int, ...]
  axes: tuple[str | None, ...]
  cfg: ModelConfig
  use_bias: bool = True
  out_dtype: Any = None
  kernel_init: Initializer = DEFAULT_INIT

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = (self.features,) if isinstance(self.features, int) else tuple(self.features)
    kernel = self.param("kernel", partitioned(self.kernel_init, self.axes), (x.shape[-1], *features),
                        param_dtype(self.cfg))
    lora = None
    if self.has_variable(LORA, "lora_a"):
      lora = (self.get_variable(LORA, "lora_a"), self.get_variable(LORA, "lora_b"))
    y = dense(x, kernel, self.cfg, self.out_dtype, lora)
    if self.use_bias:
      bias = self.param("bias", partitioned(nn.initializers.zeros_init(), self.axes[1:]), features,
                        param_dtype(self.cfg))
      y = y + bias.astype(y.dtype)
    return y


class GeluMlp(nn.Module):
  """Whisper's MLP: fc2(GELU(fc1(x))), exact (erf) GELU, both with bias; output width = input width."""

  cfg: ModelConfig
  mlp_dim: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = checkpoint_name(Linear(self.mlp_dim, ("embed", "mlp"), self.cfg, name="fc1")(x), "mlpwi")
    h = jax.nn.gelu(h, approximate=False)
    return checkpoint_name(Linear(x.shape[-1], ("mlp", "embed"), self.cfg, name="fc2")(h), "mlpwo")


class LayerNorm(nn.Module):
  """LayerNorm with scale and bias, computed in float32, returned in the compute dtype."""

  cfg: ModelConfig
  eps: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = x.shape[-1]
    scale = self.param("scale", partitioned(nn.initializers.ones_init(), ("norm",)), (d,), param_dtype(self.cfg))
    bias = self.param("bias", partitioned(nn.initializers.zeros_init(), ("norm",)), (d,), param_dtype(self.cfg))
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
    y = y * scale.astype(jnp.float32) + bias.astype(jnp.float32)
    return y.astype(compute_dtype(self.cfg))


class RMSNorm(nn.Module):
  """RMSNorm (Qwen): x * rsqrt(mean(x^2) + eps) * scale, computed in float32."""

  cfg: ModelConfig
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = x.shape[-1]
    scale = self.param("scale", partitioned(nn.initializers.ones_init(), ("norm",)), (d,), param_dtype(self.cfg))
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    return (y * scale.astype(jnp.float32)).astype(compute_dtype(self.cfg))


def embedding(cfg: ModelConfig, num: int, features: int, axes: tuple[str, str], name: str | None = None) -> nn.Embed:
  """A token table (param `embedding` [num, features]) returning rows in the compute dtype."""
  return nn.Embed(num, features, dtype=compute_dtype(cfg), param_dtype=param_dtype(cfg),
                  embedding_init=partitioned(DEFAULT_INIT, axes), name=name)


# Activations tagged with `checkpoint_name` in the layers (MaxText names): q/k/v projections, the attention
# output before its projection ("context"), the output projection, the MLP input and output matmuls.
_QKV = ("query_proj", "key_proj", "value_proj")
_MLP_IN = ("mlpwi", "mlpwi_0", "mlpwi_1")
# Which tagged activations a scanned layer keeps for the backward pass; everything else (attention
# scores, softmax, norms, activations) is recomputed. "none" = no remat (keep all), "full" = keep only
# the layer input; "dots" = every matmul without batch dimensions (JAX's dots_with_no_batch_dims).
REMAT_POLICIES = {
    "minimal": _QKV + ("context", "out_proj") + _MLP_IN + ("mlpwo",),
    "save_dot_except_mlpwi": _QKV + ("out_proj", "mlpwo"),
    "save_dot_except_mlp": _QKV + ("out_proj",),
    "save_qkv_proj": _QKV,
    "save_out_proj": ("out_proj",),
}


def remat(block: type[nn.Module], policy: str) -> type[nn.Module]:
  """Wraps a layer class in rematerialisation with a named policy ("none", "full", "dots" or a key of
  REMAT_POLICIES)."""
  if policy == "none":
    return block
  if policy == "full":
    return nn.remat(block, prevent_cse=False)
  if policy == "dots":
    return nn.remat(block, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable, prevent_cse=False)
  if policy not in REMAT_POLICIES:
    names = ["none", "full", "dots", *REMAT_POLICIES]
    raise ValueError(f"ModelConfig.remat_policy must be one of {names}, got {policy!r}")
  saved = jax.checkpoint_policies.save_only_these_names(*REMAT_POLICIES[policy])
  return nn.remat(block, policy=saved, prevent_cse=False)


def scan_layers(block: type[nn.Module], n_layers: int, in_axes: tuple[Any, ...]) -> type[nn.Module]:
  """Stacks `n_layers` copies of `block` with nn.scan (params and LoRA factors get a leading "layers" axis)."""
  return nn.scan(block, variable_axes={"params": 0, LORA: 0}, split_rngs={"params": True}, in_axes=in_axes,
                 length=n_layers, metadata_params={nn.PARTITION_NAME: "layers"})
