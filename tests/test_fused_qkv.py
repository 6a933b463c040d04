"""The fused q|k|v layout (`DecoderConfig.fused_qkv`): same numbers as separate q/k/v everywhere.

Forward logits, training loss and gradients, greedy generation, conversion from Qwen v1's `c_attn` (and the
bit-exact export back), restoring a separate-layout checkpoint into a fused run (and back), LoRA merge and
HF-PEFT export, and the refusals (grouped KV heads, a Qwen2 source). Sharding of the fused kernel on a
mesh is in tests/test_sharding_mesh.py's worker.
"""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conversion import convert, export, reference, tiny_models, verify
from conversion.readers import TensorSource
from qwen_audio_jax import checkpoint_io
from qwen_audio_jax.infer import DecodeSettings, Generator, Prompt
from qwen_audio_jax.model import Model, forward, get_config, init_params, loss_fn, qkv_layout
from qwen_audio_jax.train import checkpointing, defaults, lora as lora_lib, loop, peft_export, testing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
quiet = lambda *a, **k: None  # noqa: E731


def fused(cfg):
  return cfg.replace(decoder=dataclasses.replace(cfg.decoder, fused_qkv=True))


def random_params(cfg, seed=0):
  """init_params with non-zero biases (zero q/k/v biases would hide a bias put on the wrong projection)."""
  p = init_params(cfg, jax.random.PRNGKey(seed))
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map_with_path(
      lambda path, x: x + 0.05 * rng.normal(size=x.shape).astype(x.dtype) if "bias" in jax.tree_util.keystr(path)
      else x, p)


def test_fused_layout_shapes_and_exact_rearrangement():
  cfg = get_config("tiny-qwen-audio")
  p = random_params(cfg)
  pf = qkv_layout.fuse(p)
  attn = pf["decoder"]["layers"]["attn"]
  assert set(attn) == {"qkv", "o"}
  d = cfg.decoder
  assert attn["qkv"]["kernel"].shape == (d.n_layers, d.d_model, 3, d.n_heads * d.head_dim)
  assert attn["qkv"]["bias"].shape == (d.n_layers, 3, d.n_heads * d.head_dim)
  want = checkpoint_io.param_shapes(fused(cfg))
  assert {k: tuple(v.shape) for k, v in checkpoint_io.flatten(pf).items()} == want
  np.testing.assert_array_equal(attn["qkv"]["kernel"][:, :, 1], p["decoder"]["layers"]["attn"]["k"]["kernel"])
  back = qkv_layout.split(pf)
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(p)))
  assert qkv_layout.to_layout(p, fused(cfg))["decoder"]["layers"]["attn"].keys() == attn.keys()
  assert qkv_layout.to_layout(p, cfg) is p


def test_grouped_kv_heads_refused():
  with pytest.raises(ValueError, match="fused_qkv needs n_kv_heads == n_heads"):
    dataclasses.replace(get_config("tiny-qwen").decoder, n_kv_heads=2, fused_qkv=True)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_forward_loss_and_gradients_match_separate(dtype):
  """Measured: fp32 and bf16 logits identical (max |d| 0), fp32 loss identical, gradients max |d| 2.6e-8
  (the input gradient is one matmul instead of a sum of three)."""
  cfg = get_config("tiny-qwen-audio", dtype=dtype)
  p = random_params(cfg)
  pf = qkv_layout.fuse(p)
  batch = testing.batch(cfg, seed=1, batch_size=3, seq_len=48, mel_frames=160)
  args = (batch["input_ids"], batch["attention_mask"], batch["audio_mel"], batch["audio_lengths"])
  a, b = (np.asarray(forward(x, c, *args), np.float32) for x, c in ((p, cfg), (pf, fused(cfg))))
  np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
  if dtype == "float32":
    def loss(params, c):
      return loss_fn(forward(params, c, *args), batch["targets"], batch["loss_mask"])[0]
    la, ga = jax.value_and_grad(loss)(p, cfg)
    lb, gb = jax.value_and_grad(loss)(pf, fused(cfg))
    np.testing.assert_allclose(float(lb), float(la), rtol=1e-7)
    ga = qkv_layout.fuse(ga)
    for x, y in zip(jax.tree.leaves(gb), jax.tree.leaves(ga)):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=1e-7)


def test_greedy_generation_identical():
  cfg = get_config("tiny-qwen", dtype="bfloat16")
  p = random_params(cfg)
  prompts = [Prompt(ids=np.arange(5, 17, dtype=np.int32)), Prompt(ids=np.arange(40, 45, dtype=np.int32))]
  settings = DecodeSettings(max_new_tokens=10, eos_ids=(cfg.pad_id,), suppress_ids=(cfg.pad_id,))
  a = Generator(cfg, p, max_batch=2).generate(prompts, settings)
  b = Generator(fused(cfg), qkv_layout.fuse(p), max_batch=2).generate(prompts, settings)
  assert [list(r.ids) for r in a] == [list(r.ids) for r in b] and len(a[0].ids) == 10


@pytest.fixture(scope="module")
def v1(tmp_path_factory):
  root = tmp_path_factory.mktemp("fused")
  tiny_models.hf_qwen_audio(str(root / "torch"))
  separate = convert.convert("hf-qwen-audio", str(root / "torch"), str(root / "separate"), log=quiet)
  fused_dir = convert.convert("hf-qwen-audio", str(root / "torch"), str(root / "fused"), log=quiet, fused_qkv=True)
  return str(root / "torch"), separate, fused_dir


def test_conversion_keeps_c_attn_whole_and_round_trips(v1, tmp_path):
  src, separate, fused_dir = v1
  cfg_s, ps, _ = checkpoint_io.load_model_checkpoint(separate)
  cfg_f, pf, _ = checkpoint_io.load_model_checkpoint(fused_dir)
  assert cfg_f.decoder.fused_qkv and not cfg_s.decoder.fused_qkv
  c_attn = TensorSource(src).read("transformer.h.1.attn.c_attn.weight")  # [3W, D], rows q|k|v
  np.testing.assert_array_equal(np.asarray(pf["decoder"]["layers"]["attn"]["qkv"]["kernel"][1]).reshape(
      c_attn.shape[1], -1).T, c_attn)
  expect = checkpoint_io.flatten(qkv_layout.fuse(ps))
  for path, x in checkpoint_io.flatten(pf).items():
    np.testing.assert_array_equal(np.asarray(x), np.asarray(expect[path]), err_msg=path)
  report = verify.compare(fused_dir, reference.build("hf-qwen-audio", src), seconds=2.5)
  for stats in report.values():
    assert stats["max_abs"] / stats["ref_scale"] <= 5e-6
  export.export(fused_dir, "hf-qwen-audio", str(tmp_path / "x"), log=quiet)
  a, b = TensorSource(src), TensorSource(str(tmp_path / "x"))
  assert sorted(a.infos) == sorted(b.infos)
  assert all(a.read(n).tobytes() == b.read(n).tobytes() for n in a.infos)


def test_fused_flag_refused_for_separate_sources(tmp_path):
  out = tmp_path / "out"
  r = subprocess.run([sys.executable, "conversion/convert.py", "--source=hf-qwen2-audio", "--input=/nonexistent",
                      f"--output={out}", "--fused_qkv"], cwd=REPO, capture_output=True, text=True)
  assert r.returncode == 2 and not out.exists()
  assert r.stderr.strip().splitlines() == [
      "error: --fused_qkv: --source=hf-qwen2-audio stores q/k/v as separate tensors; the fused layout converts "
      "from Qwen v1's c_attn (hf-qwen, hf-qwen-audio, compose)"]


@pytest.mark.parametrize("direction", ["separate->fused", "fused->separate"])
def test_training_restores_the_other_layout(v1, tmp_path, direction):
  _, separate, fused_dir = v1
  source, run_fused = (separate, True) if direction == "separate->fused" else (fused_dir, False)
  ckpt_cfg, _, _ = checkpoint_io.load_model_checkpoint(source)
  _, want, _ = checkpoint_io.load_model_checkpoint(fused_dir if run_fused else separate)
  cfg = testing.mini_config()
  overrides = {k: v for k, v in checkpoint_io.config_lib.to_dict(ckpt_cfg).items() if k != "family"}
  overrides["decoder"] = {**overrides["decoder"], "fused_qkv": run_fused}
  cfg.model = defaults.model_block("tiny-qwen-audio", **overrides)
  plan = loop.setup(cfg, str(tmp_path / "run"))[2]
  params = checkpointing.restore_params_dir(source, plan)
  got, expect = checkpoint_io.flatten(params), checkpoint_io.flatten(want)
  assert set(got) == set(expect)
  shardings = checkpoint_io.flatten(plan.shardings["params"])
  for path, x in expect.items():
    assert got[path].sharding.is_equivalent_to(shardings[path], x.ndim), path
    np.testing.assert_array_equal(np.asarray(jax.device_get(got[path])), np.asarray(x), err_msg=path)


def _lora(params, rank, seed=3):
  """Adapters on every decoder projection with random (non-zero) B."""
  lora = lora_lib.init(jax.random.PRNGKey(seed), params, [r"decoder/layers/attn/(q|k|v|qkv|o)"], rank)
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: x + 0.1 * rng.normal(size=x.shape).astype(np.float32), lora)


def test_lora_on_the_fused_kernel_merges_and_exports_as_c_attn():
  cfg = fused(get_config("tiny-qwen-audio"))
  p, rank, alpha = random_params(cfg), 4, 8.0
  lora = _lora(p, rank)
  kernel = p["decoder"]["layers"]["attn"]["qkv"]["kernel"]
  assert lora["decoder"]["layers"]["attn"]["qkv"]["lora_b"].shape == (kernel.shape[0], rank, *kernel.shape[2:])
  s = lora_lib.scale(rank, alpha)
  merged = lora_lib.merge(p, lora, s)["decoder"]["layers"]["attn"]["qkv"]["kernel"]
  a = lora["decoder"]["layers"]["attn"]["qkv"]["lora_a"]
  b = lora["decoder"]["layers"]["attn"]["qkv"]["lora_b"]
  np.testing.assert_allclose(merged, kernel + s * np.einsum("lir,lrxo->lixo", a, b), rtol=0, atol=2e-7)
  # The side path in the forward pass equals the merged kernel.
  ids = jnp.arange(7, 30)[None]
  side = forward_with_lora(p, cfg, lora_lib.collection(lora, s), ids)
  merged_logits = forward(lora_lib.merge(p, lora, s), cfg, ids)
  np.testing.assert_allclose(np.asarray(side), np.asarray(merged_logits), rtol=0, atol=2e-6)
  # PEFT, Qwen-Audio naming: c_attn's adapter is this adapter as is (rank r, no rank_pattern entry).
  tensors, config = peft_export.peft_tensors(lora, rank, alpha, "qwen-audio")
  assert "c_attn" not in config["rank_pattern"]
  key = "base_model.model.transformer.h.1.attn.c_attn."
  a_t, b_t = tensors[key + "lora_A.weight"], tensors[key + "lora_B.weight"]
  assert a_t.shape == (rank, kernel.shape[1]) and b_t.shape == (3 * kernel.shape[3], rank)
  np.testing.assert_allclose(s * (b_t @ a_t), (merged[1] - kernel[1]).reshape(kernel.shape[1], -1).T,
                             rtol=0, atol=2e-7)
  # Qwen2 naming: q_proj / k_proj / v_proj share A, each with its block of B.
  tensors2, _ = peft_export.peft_tensors(lora, rank, alpha, "qwen2-audio")
  for j, part in enumerate("qkv"):
    key = f"base_model.model.model.language_model.layers.1.self_attn.{part}_proj."
    delta = s * tensors2[key + "lora_B.weight"] @ tensors2[key + "lora_A.weight"]
    np.testing.assert_allclose(delta, (merged[1, :, j] - kernel[1, :, j]).T, rtol=0, atol=2e-7)


def forward_with_lora(params, cfg, collection, ids):
  return Model(cfg).apply({"params": params, "lora": collection}, ids)


_MESH_WORKER = r'''
import json, sys
import jax
import numpy as np
jax.config.update("jax_default_matmul_precision", "highest")
from qwen_audio_jax import checkpoint_io
from qwen_audio_jax.sharding import mesh as mesh_lib, partition
from qwen_audio_jax.train import model_fns, optimizer, state as state_lib, step as step_lib, testing
cfg = testing.mini_config()
cfg.model.decoder.fused_qkv = True
mcfg = model_fns.resolve_model_config(cfg.model)
fns, opt = model_fns.build(mcfg), optimizer.make_optimizer(cfg.optim, 10)
host_batch, rng, out = testing.batch(mcfg, seed=0), jax.random.PRNGKey(1), {}
def loss_grads(plan, state):
  batch = partition.host_to_global(host_batch, plan.mesh)
  with partition.activation_context(plan.mesh):
    (loss, _), grads = jax.jit(step_lib.make_loss_and_grads(plan))(plan.trainable(state), plan.frozen(state), batch, rng)
  return float(loss), checkpoint_io.flatten(jax.tree_util.tree_map(np.asarray, grads))
one = state_lib.make_plan(fns, opt, mesh_lib.make_mesh((1, 1, 1), devices=jax.devices()[:1]), cfg.train)
state = state_lib.create(one, 0)
ref_loss, ref_grads = loss_grads(one, state)
plan = state_lib.make_plan(fns, opt, mesh_lib.make_mesh((1, 4, 2)), cfg.train)
loss, grads = loss_grads(plan, jax.device_put(jax.tree_util.tree_map(np.asarray, state), plan.shardings))
sh = checkpoint_io.flatten(plan.shardings["params"])
out["spec"] = {k: [str(a) for a in sh[k].spec] for k in ("decoder/layers/attn/qkv/kernel", "decoder/layers/attn/qkv/bias")}
out["d_loss"] = abs(loss - ref_loss)
out["d_grad"] = max(float(np.max(np.abs(grads[k] - ref_grads[k]))) for k in ref_grads)
json.dump(out, open(sys.argv[1], "w"))
'''


def test_fused_kernel_is_split_over_heads_on_a_mesh(tmp_path):
  """Mesh (data 1, fsdp 4, tensor 2) on 8 CPU devices: the fused kernel's heads axis on `tensor`, its input
  axis on `fsdp`, and loss/gradients equal to one device (measured 9.5e-7 / 4.5e-8)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0",
             PYTHONPATH=REPO)
  script, out = tmp_path / "worker.py", tmp_path / "out.json"
  script.write_text(_MESH_WORKER)
  subprocess.run([sys.executable, str(script), str(out)], env=env, check=True, capture_output=True, text=True,
                 timeout=600)
  r = json.loads(out.read_text())
  print(r)
  assert r["spec"]["decoder/layers/attn/qkv/kernel"] == ["None", "fsdp", "None", "tensor"]
  assert r["spec"]["decoder/layers/attn/qkv/bias"] == ["None", "None", "tensor"]
  assert r["d_loss"] < 5e-6 and r["d_grad"] < 3e-7


def test_fused_qwen2_audio_model_exports_separate_q_k_v(tmp_path):
  """A Qwen2-Audio run with the fused layout (restored from a separate checkpoint) exports to the hub
  naming's q_proj / k_proj / v_proj: every tensor bit-equal to the source."""
  tiny_models.hf_qwen2_audio(str(tmp_path / "torch"))
  separate = convert.convert("hf-qwen2-audio", str(tmp_path / "torch"), str(tmp_path / "separate"), log=quiet)
  cfg, params, meta = checkpoint_io.load_model_checkpoint(separate)
  fused_dir = str(tmp_path / "fused")
  checkpoint_io.save_model_checkpoint(fused_dir, fused(cfg), qkv_layout.fuse(params), meta)
  export.export(fused_dir, "hf-qwen2-audio", str(tmp_path / "x"), log=quiet)
  a, b = TensorSource(str(tmp_path / "torch")), TensorSource(str(tmp_path / "x"))
  mapped = [n for n in a.infos if "rotary_emb" not in n]  # buffers are carried files, not params
  assert sorted(mapped) == sorted(b.infos)
  assert all(a.read(n).tobytes() == b.read(n).tobytes() for n in mapped)


def test_compose_cli_with_fused_qkv(tmp_path):
  """`convert.py --source=compose --fused_qkv`: the composed decoder is the separate compose, fused."""
  whisper = tiny_models.hf_whisper(str(tmp_path / "hf-whisper"))
  tiny_models.openai_whisper(str(tmp_path / "w.pt"), whisper)
  tiny_models.hf_qwen(str(tmp_path / "qwen"))
  outs = {}
  for name, extra in (("separate", []), ("fused", ["--fused_qkv"])):
    outs[name] = str(tmp_path / name)
    subprocess.run([sys.executable, "conversion/convert.py", "--source=compose", f"--whisper={tmp_path / 'w.pt'}",
                    f"--qwen={tmp_path / 'qwen'}", f"--output={outs[name]}", *extra], cwd=REPO, check=True,
                   capture_output=True, text=True)
  _, ps, _ = checkpoint_io.load_model_checkpoint(outs["separate"])
  cfg, pf, _ = checkpoint_io.load_model_checkpoint(outs["fused"])
  assert cfg.decoder.fused_qkv
  expect = checkpoint_io.flatten(qkv_layout.fuse(ps))
  got = checkpoint_io.flatten(pf)
  assert set(got) == set(expect) and all(np.array_equal(got[p], expect[p]) for p in got)
