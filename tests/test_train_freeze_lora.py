"""Freezing (no optimizer state, bit-identical frozen params), LoRA (side path vs a numpy dense
reference, no merged kernel in the step, PEFT export), the answer-only loss and gradient accumulation,
on the mini Qwen-Audio model (one CPU device).

The compiled work runs once in a subprocess (fast-compile XLA flags) and reports numbers as JSON.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

RANK, ALPHA = 4, 8.0
LORA_TARGETS = (r"decoder/layers/attn/(q|k|v|o)", r"decoder/layers/mlp/(gate|down)",
                r"audio_encoder/layers/attn/query")


def _max_diff(a, b):
  import jax
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
             for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def _worker(out_dir):
  import jax
  import ml_collections
  from flax import traverse_util
  jax.config.update("jax_default_matmul_precision", "highest")
  from qwen_audio_jax.sharding import mesh as mesh_lib, partition
  from qwen_audio_jax.train import (lora as lora_lib, model_fns, optimizer, peft_export, state as state_lib,
                                    step as step_lib, testing)

  out = {}
  mesh = mesh_lib.make_mesh((1, 1, 1))
  cfg = testing.mini_config()
  mcfg = model_fns.resolve_model_config(cfg.model)
  fns = model_fns.build(mcfg)
  params = jax.jit(fns.init)(jax.random.PRNGKey(0))
  host_params = jax.tree_util.tree_map(np.asarray, params)
  b0 = testing.batch(mcfg, seed=0)
  batch = partition.host_to_global(b0, mesh)

  def plan_for(freeze=(), lora=None, accum=1):
    c = testing.mini_config(freeze=freeze, grad_accum_steps=accum)
    if lora:
      c.lora = ml_collections.ConfigDict(dict(enabled=True, rank=RANK, alpha=ALPHA, targets=LORA_TARGETS))
    return state_lib.make_plan(fns, optimizer.make_optimizer(c.optim, 10), mesh, c.train, c.lora), c

  # Stage 1: LLM frozen.
  plan, c = plan_for(freeze=(r"decoder/.*",))
  state = state_lib.create(plan, 0, params=params)
  step = step_lib.make_train_step(plan, c.train)
  for seed in (0, 1):
    state, _ = step(state, partition.host_to_global(testing.batch(mcfg, seed=seed), mesh))
  new = jax.tree_util.tree_map(np.asarray, state["params"])
  out["stage1_decoder_diff"] = _max_diff(new["decoder"], host_params["decoder"])
  out["stage1_encoder_change"] = _max_diff(new["audio_encoder"]["layers"], host_params["audio_encoder"]["layers"])
  out["stage1_projector_change"] = _max_diff(new["audio_projector"], host_params["audio_projector"])
  out["stage1_bos_eos_change"] = _max_diff(new["audio_bos_eos"], host_params["audio_bos_eos"])
  out["stage1_positions_diff"] = _max_diff(new["audio_encoder"]["embed_positions"],
                                           host_params["audio_encoder"]["embed_positions"])
  out["stage1_opt_paths"] = sorted({jax.tree_util.keystr(p) for p, _ in
                                    jax.tree_util.tree_flatten_with_path(state["opt_state"])[0]})
  out["stage1_opt_numel"] = int(sum(x.size for x in jax.tree_util.tree_leaves(state["opt_state"])))
  out["stage1_trainable_numel"] = int(sum(x.size for x in jax.tree_util.tree_leaves(plan.trainable(state))))

  # Stage 2 structure: encoder frozen, no optimizer state for it.
  plan2, _ = plan_for(freeze=(r"audio_encoder/.*",))
  out["stage2_opt_paths"] = sorted({jax.tree_util.keystr(p) for p, _ in
                                    jax.tree_util.tree_flatten_with_path(plan2.abstract["opt_state"])[0]})

  # Answer-only loss: targets outside loss_mask do not matter; accumulation == one batch.
  plan3, _ = plan_for()
  lg = jax.jit(step_lib.make_loss_and_grads(plan3))
  rng = jax.random.PRNGKey(3)
  full = {"params": params}
  (l1, n1), g1 = lg(full, {}, batch, rng)
  scrambled = dict(b0, targets=np.where(b0["loss_mask"] == 1, b0["targets"], (b0["targets"] + 7) % 4000))
  (l2, n2), g2 = lg(full, {}, partition.host_to_global(scrambled, mesh), rng)
  out["mask_loss_diff"], out["mask_grad_diff"] = abs(float(l1 - l2)), _max_diff(g1, g2)
  out["tokens"], out["mask_sum"] = float(n1), int(b0["loss_mask"].sum())
  logits = jax.jit(lambda p, b: fns.forward(p, b, train=True))(params, batch)  # full [B, S, V] logits
  lp = jax.nn.log_softmax(np.asarray(logits, np.float64), -1)
  nll = -np.take_along_axis(np.asarray(lp), b0["targets"][..., None], -1)[..., 0]
  out["manual_loss_diff"] = abs(float(l1) - float((nll * b0["loss_mask"]).sum() / b0["loss_mask"].sum()))
  plan4, _ = plan_for(accum=2)
  (l4, _), g4 = jax.jit(step_lib.make_loss_and_grads(plan4, accum=2))(full, {}, batch, rng)
  out["accum_loss_diff"], out["accum_grad_diff"] = abs(float(l1 - l4)), _max_diff(g1, g4)

  # LoRA: everything frozen, adapters train (a side path in the adapted layers); PEFT export.
  plan5, c5 = plan_for(freeze=(r".*",), lora=True)
  state = state_lib.create(plan5, 0, params=params)
  forward = jax.jit(lambda p, b, lo: fns.forward(p, b, train=False, lora=lo))

  def forward_lora(st, b):  # what the step feeds the model: base params + the "lora" collection
    p, lo = plan5.model_inputs(plan5.trainable(st), plan5.frozen(st))
    return forward(p, b, lo)

  out["lora_init_diff"] = _max_diff(forward_lora(state, batch), forward(params, batch, None))
  step5 = step_lib.make_train_step(plan5, c5.train)
  for seed in (0, 1):
    state, _ = step5(state, partition.host_to_global(testing.batch(mcfg, seed=seed), mesh))
  lora = jax.tree_util.tree_map(np.asarray, state["lora"])
  out["lora_base_diff"] = _max_diff(state["params"], host_params)
  out["lora_b_norm"] = float(sum(np.abs(v).sum() for k, v in traverse_util.flatten_dict(lora).items()
                                 if k[-1] == "lora_b"))
  out["lora_opt_paths"] = sorted({jax.tree_util.keystr(p) for p, _ in
                                  jax.tree_util.tree_flatten_with_path(state["opt_state"])[0]})
  out["lora_scale"] = plan5.lora_scale

  # Independent dense reference: trained-looking adapters (B random, not ~0), merged in float64 numpy
  # as W + (alpha / rank) · A @ B, run through the plain model (no LoRA collection).
  rng_np = np.random.default_rng(5)
  big = traverse_util.unflatten_dict({k: v if k[-1] == "lora_a" else 0.05 * rng_np.standard_normal(v.shape)
                                      .astype(np.float32) for k, v in traverse_util.flatten_dict(lora).items()})
  dense = traverse_util.flatten_dict(host_params)
  for path, a in traverse_util.flatten_dict(big).items():
    if path[-1] == "lora_a":
      k, b = path[:-1] + ("kernel",), traverse_util.flatten_dict(big)[path[:-1] + ("lora_b",)]
      delta = np.einsum("...ir,...ro->...io", a.astype(np.float64), b.astype(np.float64))
      dense[k] = (dense[k].astype(np.float64) + (ALPHA / RANK) * delta).astype(np.float32)
  dense = traverse_util.unflatten_dict(dense)
  big_state = dict(state, lora=big)
  side_logits = forward_lora(big_state, batch)
  out["lora_side_vs_dense"] = _max_diff(side_logits, forward(dense, batch, None))
  out["lora_effect"] = _max_diff(side_logits, forward(params, batch, None))
  out["lora_merged_params_diff"] = _max_diff(plan5.merged_params(big_state), dense)  # merged export
  # Gradients of the step's loss w.r.t. the adapters: side path vs autodiff through a dense merge.
  (l_side, _), g_side = jax.jit(step_lib.make_loss_and_grads(plan5))(
      plan5.trainable(big_state), plan5.frozen(big_state), batch, rng)
  dense_loss = lambda lo: fns.loss(lora_lib.merge(params, lo, ALPHA / RANK), batch, train=True)[0]
  l_dense, g_dense = jax.jit(jax.value_and_grad(dense_loss))(big)
  out["lora_loss_diff"], out["lora_grad_diff"] = abs(float(l_side - l_dense)), _max_diff(g_side["lora"], g_dense)
  out["lora_grad_max"] = max(float(np.abs(np.asarray(g)).max()) for g in jax.tree_util.tree_leaves(g_dense))
  for name, tree in (("lora", lora), ("base", host_params)):
    flat = {"/".join(k): v for k, v in traverse_util.flatten_dict(tree).items()}
    np.savez(os.path.join(out_dir, f"{name}.npz"), **flat)
  for naming in peft_export.NAMINGS:
    peft_export.export(lora, os.path.join(out_dir, naming), rank=RANK, alpha=ALPHA, naming=naming)
  with open(os.path.join(out_dir, "report.json"), "w") as f:
    json.dump(out, f)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  out = tmp_path_factory.mktemp("freeze_lora")
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_backend_optimization_level=0")
  proc = subprocess.run([sys.executable, __file__, str(out)], env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return out, json.loads((out / "report.json").read_text())


def test_stage1_llm_frozen_bit_identical_encoder_trains(run):
  r = run[1]
  assert r["stage1_decoder_diff"] == 0.0
  assert r["stage1_positions_diff"] == 0.0  # stop-gradient table: never trained
  assert r["stage1_encoder_change"] > 1e-5
  assert r["stage1_projector_change"] > 1e-5 and r["stage1_bos_eos_change"] > 1e-5


def test_frozen_params_have_no_optimizer_state(run):
  r = run[1]
  assert r["stage1_opt_paths"] and not any("decoder" in p for p in r["stage1_opt_paths"])
  assert not any("embed_positions" in p for p in r["stage1_opt_paths"])
  assert r["stage1_opt_numel"] == 2 * r["stage1_trainable_numel"] + 2  # mu + nu + adam and schedule counts
  assert not any("audio_encoder" in p for p in r["stage2_opt_paths"])
  assert any("decoder" in p for p in r["stage2_opt_paths"])
  assert any("audio_projector" in p for p in r["stage2_opt_paths"])


def test_loss_covers_only_answer_tokens(run):
  r = run[1]
  assert r["tokens"] == r["mask_sum"]
  assert r["mask_loss_diff"] == 0.0 and r["mask_grad_diff"] == 0.0
  assert r["manual_loss_diff"] < 1e-5


def test_gradient_accumulation_matches_one_batch(run):
  r = run[1]
  assert r["accum_loss_diff"] < 1e-5 and r["accum_grad_diff"] < 1e-6


def test_lora_base_frozen_adapters_train(run):
  r = run[1]
  assert r["lora_init_diff"] == 0.0  # B = 0 at init: the model is unchanged
  assert r["lora_base_diff"] == 0.0
  assert r["lora_b_norm"] > 0.0
  moments = [p for p in r["lora_opt_paths"] if ".mu" in p or ".nu" in p]
  assert moments and all("['lora']" in p for p in moments)


def test_lora_side_path_equals_dense_numpy_reference(run):
  """Logits and merged params against W + (alpha / rank) · A @ B written in numpy (float64); the
  adapters move the logits by far more than the tolerance, so a wrong scale or side cannot pass."""
  r = run[1]
  assert r["lora_scale"] == ALPHA / RANK == 2.0
  assert r["lora_effect"] > 0.05
  assert r["lora_side_vs_dense"] <= 2e-6
  assert r["lora_merged_params_diff"] <= 1e-7


def test_lora_side_path_gradients_equal_dense_merge_gradients(run):
  r = run[1]
  assert r["lora_loss_diff"] <= 1e-6
  assert r["lora_grad_max"] > 1e-3 and r["lora_grad_diff"] <= 1e-6 * r["lora_grad_max"] * 10


def _step_temp_bytes(lora: bool) -> tuple[int, int]:
  """(XLA temporaries of the compiled train step, bytes of the adapted kernels) on a mini model whose
  decoder is widened (d_model 1024, mlp 4096) so that kernels outweigh activations; abstract shapes only."""
  import jax
  import jax.numpy as jnp
  import ml_collections
  from flax import traverse_util
  from qwen_audio_jax.sharding import mesh as mesh_lib, partition
  from qwen_audio_jax.train import defaults, model_fns, optimizer, state as state_lib, step as step_lib, testing

  if lora:  # everything frozen, adapters train
    c = testing.mini_config(freeze=(r".*",))
    c.lora = ml_collections.ConfigDict(dict(enabled=True, rank=RANK, alpha=ALPHA, targets=LORA_TARGETS[:2]))
  else:  # baseline: no kernel trains at all (only the final norm's scale)
    c = testing.mini_config(freeze=(r".*",), trainable=("decoder/final_norm/scale",))
  c.model = defaults.model_block("tiny-qwen-audio", **dict(testing.MINI_MODEL, decoder=dict(
      vocab_size=4096, d_model=1024, mlp_dim=4096)))
  mesh = mesh_lib.make_mesh((1, 1, 1), devices=jax.devices()[:1])
  fns = model_fns.build(model_fns.resolve_model_config(c.model))
  plan = state_lib.make_plan(fns, optimizer.make_optimizer(c.optim, 10), mesh, c.train, c.lora)
  flat = traverse_util.flatten_dict(plan.abstract["params"])
  adapted = sum(flat[p[:-1] + ("kernel",)].size * 4 for p in traverse_util.flatten_dict(plan.abstract.get("lora", {}))
                if p[-1] == "lora_a")
  spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=partition.batch_sharding(mesh))
  batch = {k: spec((2, 32), jnp.int32) for k in ("input_ids", "attention_mask", "targets", "loss_mask")}
  batch.update(audio_mel=spec((2, 80, 192), jnp.float32), audio_lengths=spec((2,), jnp.int32))
  state = jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                 plan.abstract, plan.shardings)
  with partition.activation_context(mesh):
    compiled = step_lib.make_train_step(plan, c.train).jitted.lower(state, batch).compile()
  return compiled.memory_analysis().temp_size_in_bytes, adapted


def test_lora_step_builds_no_merged_kernel():
  """A merged W + s·A@B in the step costs two copies of every adapted kernel (W' and its gradient);
  the side path must add less than one over a step that trains no kernel (measured: +20 MB of
  69 MB adapted; merging inside the step: +159 MB)."""
  temp_lora, adapted = _step_temp_bytes(lora=True)
  temp_base, _ = _step_temp_bytes(lora=False)
  print(f"step temporaries: LoRA {temp_lora / 1e6:.0f} MB, no LoRA {temp_base / 1e6:.0f} MB, "
        f"adapted kernels {adapted / 1e6:.0f} MB")
  assert adapted > 60e6
  assert temp_lora - temp_base < adapted


def test_lora_side_path_is_scanned_and_rematerialised_with_the_layers():
  """The "lora" collection is split per layer by nn.scan and passes through every remat policy: logits
  and adapter gradients equal the unrematerialised ones, and differ from the base model's."""
  import jax
  from flax import traverse_util
  from qwen_audio_jax.model import Model, get_config, init_params
  from qwen_audio_jax.train import lora as lora_lib
  cfg = get_config("tiny-qwen")
  params = init_params(cfg, jax.random.PRNGKey(0))
  r = np.random.default_rng(0)
  flat = traverse_util.flatten_dict(lora_lib.init(jax.random.PRNGKey(1), params, LORA_TARGETS[:2], RANK))
  lora = traverse_util.unflatten_dict({k: v if k[-1] == "lora_a" else 0.1 * r.standard_normal(v.shape, np.float32)
                                       for k, v in flat.items()})
  ids = r.integers(0, 1000, (2, 9))

  def run(policy):
    model = Model(cfg.replace(remat_policy=policy))

    def f(lo):
      logits = model.apply({"params": params, "lora": lora_lib.collection(lo, ALPHA / RANK)}, ids, train=True)
      return (logits ** 2).mean(), logits

    (_, logits), grads = jax.jit(jax.value_and_grad(f, has_aux=True))(lora)
    return logits, grads

  logits, grads = run("none")
  assert _max_diff(logits, Model(cfg).apply({"params": params}, ids, train=True)) > 1e-2
  for policy in ("full", "minimal"):
    other_logits, other_grads = run(policy)
    assert _max_diff(other_logits, logits) <= 1e-6 and _max_diff(other_grads, grads) <= 1e-6, policy


def _peft_delta(tensors, config, module):
  a, b = tensors[f"base_model.model.{module}.lora_A.weight"], tensors[f"base_model.model.{module}.lora_B.weight"]
  leaf = module.split(".")[-1]
  r, alpha = config["rank_pattern"].get(leaf, config["r"]), config["alpha_pattern"].get(leaf, config["lora_alpha"])
  assert a.shape[0] == b.shape[1] == r
  return alpha / r * (b.astype(np.float64) @ a)  # PEFT: W[out, in] += scale * B @ A


def test_peft_export_qwen2_audio_names_shapes_and_values(run):
  import re
  import torch
  import transformers
  from safetensors.numpy import load_file
  out = run[0]
  tensors = load_file(str(out / "qwen2-audio" / "adapter_model.safetensors"))
  config = json.loads((out / "qwen2-audio" / "adapter_config.json").read_text())
  assert config["peft_type"] == "LORA" and config["r"] == RANK and config["lora_alpha"] == ALPHA
  lora, base = np.load(out / "lora.npz"), np.load(out / "base.npz")
  hf_cfg = transformers.Qwen2AudioConfig(
      audio_config=dict(d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=256,
                        num_mel_bins=80),
      text_config=dict(vocab_size=256, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4))
  torch.manual_seed(0)
  hf = transformers.Qwen2AudioForConditionalGeneration(hf_cfg)
  modules = dict(hf.named_modules())
  seen = set()
  for key in tensors:
    name = key[len("base_model.model."):].rsplit(".lora_", 1)[0]
    if name in seen:
      continue
    seen.add(name)
    assert re.fullmatch(config["target_modules"], name), name
    weight = modules[name].weight  # the transformers module PEFT adapts
    delta = _peft_delta(tensors, config, name)
    assert tuple(delta.shape) == tuple(weight.shape), name
  assert len(seen) == 2 * 6 + 2  # q,k,v,o,gate,down per decoder layer + query per encoder layer
  # Values: PEFT's W + scale·B@A equals our merged kernel, transposed (layer 1, q projection).
  s = ALPHA / RANK
  a, b = lora["decoder/layers/attn/q/lora_a"][1], lora["decoder/layers/attn/q/lora_b"][1]
  ours = base["decoder/layers/attn/q/kernel"][1] + s * a @ b
  delta = _peft_delta(tensors, config, "model.language_model.layers.1.self_attn.q_proj")
  np.testing.assert_allclose(base["decoder/layers/attn/q/kernel"][1].T + delta, ours.T, atol=1e-6)


def test_peft_export_qwen_audio_fuses_qkv(run):
  from safetensors.numpy import load_file
  out = run[0]
  tensors = load_file(str(out / "qwen-audio" / "adapter_model.safetensors"))
  config = json.loads((out / "qwen-audio" / "adapter_config.json").read_text())
  lora = np.load(out / "lora.npz")
  assert config["rank_pattern"] == {"c_attn": 3 * RANK}
  s = ALPHA / RANK
  for i in range(2):
    fused = _peft_delta(tensors, config, f"transformer.h.{i}.attn.c_attn")  # [3D, D]
    assert fused.shape == (3 * 64, 64)
    for j, proj in enumerate("qkv"):
      ours = s * lora[f"decoder/layers/attn/{proj}/lora_a"][i] @ lora[f"decoder/layers/attn/{proj}/lora_b"][i]
      np.testing.assert_allclose(fused[j * 64:(j + 1) * 64], ours.T, atol=1e-6)
    assert f"base_model.model.transformer.h.{i}.attn.c_proj.lora_A.weight" in tensors  # o
    assert f"base_model.model.transformer.h.{i}.mlp.w2.lora_B.weight" in tensors  # gate
    assert f"base_model.model.transformer.h.{i}.mlp.c_proj.lora_A.weight" in tensors  # down
    assert f"base_model.model.transformer.audio.blocks.{i}.attn.query.lora_A.weight" in tensors
  assert "base_model.model.transformer.h.0.mlp.w1.lora_A.weight" not in tensors  # up: not targeted


if __name__ == "__main__":
  _worker(sys.argv[1])
