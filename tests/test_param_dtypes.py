"""Parameter dtype per tower: frozen towers stored in the compute dtype (no per-step conversion of their
weights), numerics policy unchanged (norms, logits, loss in float32), checkpoints restored into mixed
dtypes (checkpoint_io and the trainer's init_params_dir), one stage-1 step with a bf16 frozen LLM."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen_audio_jax import checkpoint_io
from qwen_audio_jax.model import Model, abstract_params, config as model_config, init_params
from qwen_audio_jax.model.layers import LayerNorm, RMSNorm
from qwen_audio_jax.sharding import mesh as mesh_lib, partition
from qwen_audio_jax.train import checkpointing, model_fns, optimizer, state as state_lib, step as step_lib, testing

BF16, F32 = jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)


def mini(**kw):
  return model_fns.resolve_model_config(testing.mini_config().model).replace(**kw)


def dtypes_by_tower(params):
  return {top: {leaf.dtype for leaf in jax.tree.leaves(sub)} for top, sub in params.items()}


def test_each_tower_gets_its_dtype_and_the_config_round_trips():
  cfg = mini(decoder_param_dtype="bfloat16")
  assert dtypes_by_tower(abstract_params(cfg)) == {"audio_encoder": {F32}, "audio_projector": {F32},
                                                   "audio_bos_eos": {F32}, "decoder": {BF16}}
  cfg2 = mini(encoder_param_dtype="bfloat16", param_dtype="bfloat16", decoder_param_dtype="float32")
  assert dtypes_by_tower(abstract_params(cfg2)) == {"audio_encoder": {BF16}, "audio_projector": {BF16},
                                                    "audio_bos_eos": {BF16}, "decoder": {F32}}
  assert model_config.from_dict(model_config.to_dict(cfg)) == cfg


def test_storage_dtype_only_rounds_the_weights():
  """fp32 compute: bf16-stored decoder params give exactly the logits of fp32 params holding the same
  (bf16-rounded) values, i.e. nothing but the weights' storage changed."""
  cfg = mini(decoder_param_dtype="bfloat16")
  params = init_params(cfg, jax.random.PRNGKey(0))
  widened = jax.tree.map(lambda x: x.astype(jnp.float32), params)
  b = testing.batch(cfg, seed=0, batch_size=2)
  inputs = (b["input_ids"], b["attention_mask"], b["audio_mel"], b["audio_lengths"])
  got = Model(cfg).apply({"params": params}, *inputs)
  want = Model(mini()).apply({"params": widened}, *inputs)
  assert got.dtype == F32
  err = float(jnp.max(jnp.abs(got - want)))
  print(f"bf16-stored vs fp32-stored equal values: max|d| logits = {err:.1e}")
  assert err <= 1e-6  # summation order only: XLA fuses the bf16->fp32 convert into the dot


def test_float32_policy_with_bf16_params_and_compute():
  """Logits and loss in float32; norms computed in float32 from bf16 inputs and bf16 scales."""
  cfg = mini(dtype="bfloat16", param_dtype="bfloat16")
  params = init_params(cfg, jax.random.PRNGKey(1))
  b = testing.batch(cfg, seed=1, batch_size=2)
  logits = Model(cfg).apply({"params": params}, b["input_ids"], b["attention_mask"], b["audio_mel"], b["audio_lengths"])
  assert logits.dtype == F32
  from qwen_audio_jax.model import loss_fn  # pylint: disable=import-outside-toplevel
  assert loss_fn(logits, b["targets"], b["loss_mask"])[0].dtype == F32
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(3, 5, 64)) * 3, jnp.bfloat16)
  scale = jnp.asarray(1 + 0.3 * rng.normal(size=(64,)), jnp.bfloat16)
  bias = jnp.asarray(0.3 * rng.normal(size=(64,)), jnp.bfloat16)
  x32, s32, b32 = (np.asarray(a, np.float32) for a in (x, scale, bias))
  rms = RMSNorm(cfg, 1e-6).apply({"params": {"scale": scale}}, x)
  want = x32 / np.sqrt(np.mean(x32**2, -1, keepdims=True) + 1e-6) * s32
  assert rms.dtype == BF16
  np.testing.assert_array_equal(np.asarray(rms), np.asarray(jnp.asarray(want, jnp.float32).astype(jnp.bfloat16)))
  ln = LayerNorm(cfg, 1e-5).apply({"params": {"scale": scale, "bias": bias}}, x)
  mu, var = x32.mean(-1, keepdims=True), x32.var(-1, keepdims=True)
  want = (x32 - mu) / np.sqrt(var + 1e-5) * s32 + b32
  err = np.max(np.abs(np.asarray(ln, np.float32) - np.asarray(jnp.asarray(want).astype(jnp.bfloat16), np.float32)))
  assert err <= 2 ** -7 * np.abs(want).max()  # one bf16 rounding step (float32 reductions differ in order)


LAYOUT_OPS = {"reshape", "transpose", "squeeze", "expand_dims", "slice", "dynamic_slice", "copy", "copy_p"}


def _frozen_matrix_conversions(jaxpr, tracked: set[int]) -> list:
  """convert_element_type ops applied to a matrix (ndim >= 2) that is one of the `tracked` variables
  (ids), followed positionally into sub-jaxprs (scan, remat, pjit, custom_vjp) and through layout ops."""
  found = []
  for eqn in jaxpr.eqns:
    hit = [i for i, v in enumerate(eqn.invars) if id(v) in tracked]
    if not hit:
      continue
    if eqn.primitive.name == "convert_element_type" and eqn.invars[0].aval.ndim >= 2:
      found.append(eqn.invars[0].aval)
    if eqn.primitive.name in LAYOUT_OPS:
      tracked |= {id(v) for v in eqn.outvars}
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns") and len(inner.invars) == len(eqn.invars):
          found += _frozen_matrix_conversions(inner, {id(inner.invars[i]) for i in hit})
  return found


@pytest.mark.parametrize("stored", ["bfloat16", "float32"])
def test_frozen_bf16_weights_are_not_converted_each_step(stored):
  """Stage 1 (LLM frozen), bf16 compute: the loss-and-gradient computation converts no frozen matrix
  when the LLM is stored in bf16; stored in fp32 (the old single param_dtype), every one is converted."""
  cfg = mini(dtype="bfloat16", decoder_param_dtype=stored, remat_policy="full")
  fns = model_fns.build(cfg)
  train = testing.mini_config(freeze=(r"decoder/.*",)).train
  plan = state_lib.make_plan(fns, optimizer.make_optimizer(testing.mini_config().optim, 10),
                             mesh_lib.make_mesh((1, 1, 1)), train)
  state = plan.abstract
  trainable, frozen = plan.trainable(state), plan.frozen(state)
  batch = {k: jnp.asarray(v) for k, v in testing.batch(cfg, seed=0, batch_size=2).items()}
  closed = jax.make_jaxpr(step_lib.make_loss_and_grads(plan))(trainable, frozen, batch, jax.random.PRNGKey(0))
  n_trainable = len(jax.tree.leaves(trainable))
  frozen_vars = closed.jaxpr.invars[n_trainable:n_trainable + len(jax.tree.leaves(frozen))]
  converted = _frozen_matrix_conversions(closed.jaxpr, {id(v) for v in frozen_vars})
  print(f"decoder stored in {stored}: {len(converted)} conversions of frozen matrices "
        f"{sorted({(str(a.dtype), a.shape) for a in converted})}")
  assert (not converted) if stored == "bfloat16" else (len(converted) >= 8)


@pytest.fixture(scope="module")
def fp32_checkpoint(tmp_path_factory):
  cfg = mini()
  params = jax.tree.map(np.asarray, init_params(cfg, jax.random.PRNGKey(3)))
  path = str(tmp_path_factory.mktemp("mixed") / "ckpt")
  checkpoint_io.save_model_checkpoint(path, cfg, params)
  return path, params


def _check_cast(restored, fp32_params, want_cfg):
  want_dtypes = checkpoint_io.flatten(abstract_params(want_cfg))
  flat_src = checkpoint_io.flatten(fp32_params)
  for path, leaf in checkpoint_io.flatten(restored).items():
    assert leaf.dtype == want_dtypes[path].dtype, path
    want = np.asarray(jnp.asarray(flat_src[path]).astype(leaf.dtype), np.float32)
    np.testing.assert_array_equal(np.asarray(leaf, np.float32), want, err_msg=path)


def test_load_model_checkpoint_into_per_tower_dtypes(fp32_checkpoint):
  path, src = fp32_checkpoint
  cfg = mini(encoder_param_dtype="bfloat16")
  _, params, _ = checkpoint_io.load_model_checkpoint(path, dtype=abstract_params(cfg))
  _check_cast(params, src, cfg)
  assert params["audio_encoder"]["conv1"]["kernel"].dtype == BF16
  assert params["decoder"]["lm_head"]["kernel"].dtype == F32


def test_trainer_restores_init_params_into_the_plans_dtypes_and_steps(fp32_checkpoint):
  """restore_params_dir follows the plan (decoder bf16, rest fp32); one stage-1 step keeps the frozen
  LLM bit-identical in bf16 and updates the fp32 encoder."""
  path, src = fp32_checkpoint
  cfg = mini(decoder_param_dtype="bfloat16", dtype="bfloat16")
  run = testing.mini_config(freeze=(r"decoder/.*",))
  mesh = mesh_lib.make_mesh((1, 1, 1))
  plan = state_lib.make_plan(model_fns.build(cfg), optimizer.make_optimizer(run.optim, 10), mesh, run.train)
  params = checkpointing.restore_params_dir(path, plan)
  _check_cast(params, src, cfg)
  state = state_lib.create(plan, 0, params=params)
  before = jax.tree.map(np.asarray, state["params"])
  step = step_lib.make_train_step(plan, run.train)
  for seed in (0, 1):  # the first step has learning rate 0 (warm-up)
    state, metrics = step(state, partition.host_to_global(testing.batch(cfg, seed=seed), mesh))
  after = jax.tree.map(np.asarray, state["params"])
  assert np.isfinite(float(metrics["loss"]))
  assert dtypes_by_tower(after)["decoder"] == {BF16} and dtypes_by_tower(after)["audio_encoder"] == {F32}
  for a, b in zip(jax.tree.leaves(after["decoder"]), jax.tree.leaves(before["decoder"])):
    np.testing.assert_array_equal(a, b)
  assert np.max(np.abs(after["audio_encoder"]["layers"]["mlp"]["fc1"]["kernel"]
                       - before["audio_encoder"]["layers"]["mlp"]["fc1"]["kernel"])) > 0


def test_run_config_model_block_sets_and_checks_tower_dtypes():
  from qwen_audio_jax.train import defaults  # pylint: disable=import-outside-toplevel
  block = defaults.model_block("tiny-qwen-audio", decoder_param_dtype="bfloat16")
  cfg = model_fns.resolve_model_config(block)
  assert (cfg.decoder_param_dtype, cfg.encoder_param_dtype) == ("bfloat16", None)
  block.encoder_param_dtype = "bf16"  # what a command-line typo would give
  with pytest.raises(KeyError, match="encoder_param_dtype='bf16'"):
    model_fns.resolve_model_config(block)
