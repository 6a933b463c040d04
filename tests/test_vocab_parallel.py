"""Vocabulary rows padded for tensor parallelism (decoder.vocab_pad_to) on 8 simulated CPU devices.

A mini Qwen-Audio model with 4005 true vocabulary rows (no power of two divides it) padded to 4096:
on meshes with tensor = 2 and 4 the embedding and lm_head are split over `tensor` (no fallback), and
loss (blocked over the vocabulary) and gradients equal those of the unpadded model on one device, with
junk in the padded rows.
An unpadded converted checkpoint restores into the padded run (rows re-padded, sharded as planned).
The multi-device work runs once in a subprocess and reports numbers as JSON.
"""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

VOCAB, PAD_TO = 4005, 512
MESHES = [(1, 4, 2), (1, 2, 4), (2, 1, 4)]


def _worker(out_path):
  import logging
  import jax
  jax.config.update("jax_default_matmul_precision", "highest")
  from qwen_audio_jax import checkpoint_io
  from qwen_audio_jax.sharding import mesh as mesh_lib, partition
  from qwen_audio_jax.train import (checkpointing, defaults, model_fns, optimizer, state as state_lib,
                                    step as step_lib, testing)

  warnings = []
  handler = logging.Handler()
  handler.emit = lambda record: warnings.append(record.getMessage())
  logging.getLogger().addHandler(handler)

  def setup(pad_to, shape, devices=None):
    c = testing.mini_config()
    c.model = defaults.model_block("tiny-qwen-audio", **dict(  # padded: 4 strided loss blocks of 1024 columns
        testing.MINI_MODEL, loss_vocab_block=1024, decoder=dict(vocab_size=VOCAB, vocab_pad_to=pad_to)))
    fns = model_fns.build(model_fns.resolve_model_config(c.model))
    mesh = mesh_lib.make_mesh(shape, devices=devices)
    return fns, state_lib.make_plan(fns, optimizer.make_optimizer(c.optim, 10), mesh, c.train)

  host_batch = testing.batch(setup(1, (1, 1, 1), jax.devices()[:1])[0].cfg, seed=0)
  rng = jax.random.PRNGKey(1)

  def loss_grads(plan, params):
    batch = partition.host_to_global(host_batch, plan.mesh)
    state = {"params": jax.device_put(params, plan.shardings["params"])}
    with partition.activation_context(plan.mesh):
      loss_and_grads = jax.jit(step_lib.make_loss_and_grads(plan))
      (loss, _), grads = loss_and_grads(plan.trainable(state), plan.frozen(state), batch, rng)
      logits = jax.jit(lambda p, b: plan.fns.forward(p, b, train=False))(state["params"], batch)
    return float(loss), jax.tree_util.tree_map(np.asarray, grads["params"]), logits.shape

  ref_fns, ref_plan = setup(1, (1, 1, 1), jax.devices()[:1])
  ref_params = jax.tree_util.tree_map(np.asarray, jax.jit(ref_fns.init)(jax.random.PRNGKey(0)))
  ref_loss, ref_grads, ref_shape = loss_grads(ref_plan, ref_params)
  junk = np.random.default_rng(3)
  padded = jax.tree_util.tree_map(lambda x: x, ref_params)
  rows = lambda x: np.concatenate([x, 3 * junk.standard_normal((4096 - VOCAB, x.shape[1])).astype(np.float32)])
  padded["decoder"] = dict(padded["decoder"], embed={"embedding": rows(ref_params["decoder"]["embed"]["embedding"])},
                           lm_head={"kernel": rows(ref_params["decoder"]["lm_head"]["kernel"].T).T})
  out = {"ref_loss": ref_loss, "ref_logits_shape": list(ref_shape), "meshes": {}}
  for shape in MESHES:
    del warnings[:]
    _, plan = setup(PAD_TO, shape)
    loss, grads, logits_shape = loss_grads(plan, padded)
    dec, ref_dec = grads["decoder"], ref_grads["decoder"]
    real = dict(dec, embed=dec["embed"]["embedding"][:VOCAB], lm_head=dec["lm_head"]["kernel"][:, :VOCAB])
    ref_real = dict(ref_dec, embed=ref_dec["embed"]["embedding"], lm_head=ref_dec["lm_head"]["kernel"])
    diffs = [float(np.max(np.abs(a - b))) for a, b in zip(jax.tree_util.tree_leaves(dict(grads, decoder=real)),
                                                          jax.tree_util.tree_leaves(dict(ref_grads, decoder=ref_real)))]
    sh = plan.shardings["params"]["decoder"]
    out["meshes"][str(shape)] = {
        "d_loss": abs(loss - ref_loss), "d_grad": max(diffs), "logits_shape": list(logits_shape),
        "padded_grad": max(float(np.abs(dec["embed"]["embedding"][VOCAB:]).max()),
                           float(np.abs(dec["lm_head"]["kernel"][:, VOCAB:]).max())),
        "embed_spec": [str(a) for a in sh["embed"]["embedding"].spec],
        "lm_head_spec": [str(a) for a in sh["lm_head"]["kernel"].spec],
        "warnings": [w for w in warnings if "not divisible" in w]}

  # Without padding the same mesh falls back to fsdp-only rows (what the trainer now refuses).
  del warnings[:]
  _, plan = setup(1, (1, 4, 2))
  out["unpadded_embed_spec"] = [str(a) for a in plan.shardings["params"]["decoder"]["embed"]["embedding"].spec]
  out["unpadded_warnings"] = [w for w in warnings if "not divisible" in w]

  # An unpadded converted checkpoint restores into the padded run on tensor=4: zero rows added.
  ckpt = os.path.join(os.path.dirname(out_path), "converted")
  checkpoint_io.save_model_checkpoint(ckpt, ref_fns.cfg, ref_params, {"dtype": "float32", "sources": []})
  _, plan = setup(PAD_TO, (1, 2, 4))
  restored = checkpointing.restore_params_dir(ckpt, plan)
  emb = np.asarray(restored["decoder"]["embed"]["embedding"])
  head = np.asarray(restored["decoder"]["lm_head"]["kernel"])
  others = [float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(
      jax.tree_util.tree_leaves({k: v for k, v in restored.items() if k != "decoder"}),
      jax.tree_util.tree_leaves({k: v for k, v in ref_params.items() if k != "decoder"}))]
  out["restore"] = {
      "shapes": [list(emb.shape), list(head.shape)],
      "real_rows_diff": max(float(np.abs(emb[:VOCAB] - ref_params["decoder"]["embed"]["embedding"]).max()),
                            float(np.abs(head[:, :VOCAB] - ref_params["decoder"]["lm_head"]["kernel"]).max()),
                            max(others)),
      "padded_rows_max": max(float(np.abs(emb[VOCAB:]).max()), float(np.abs(head[:, VOCAB:]).max())),
      "shardings_match": all(a.sharding.is_equivalent_to(s, a.ndim) for a, s in zip(
          jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(plan.shardings["params"])))}
  with open(out_path, "w") as f:
    json.dump(out, f)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  out = tmp_path_factory.mktemp("vocab") / "report.json"
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
  proc = subprocess.run([sys.executable, __file__, str(out)], env=env, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return json.loads(out.read_text())


@pytest.mark.parametrize("shape", MESHES)
def test_padded_vocabulary_is_split_over_tensor(report, shape):
  r = report["meshes"][str(shape)]
  assert r["embed_spec"][0] == "tensor" and r["lm_head_spec"][1] == "tensor", r
  assert r["warnings"] == []


@pytest.mark.parametrize("shape", MESHES)
def test_padded_vocabulary_on_mesh_equals_unpadded_one_device(report, shape):
  r = report["meshes"][str(shape)]
  assert r["d_loss"] <= 2e-6 and r["d_grad"] <= 6e-7, r  # d_grad measured up to 2.16e-7 (reduction order)
  assert r["padded_grad"] == 0.0
  assert r["logits_shape"] == report["ref_logits_shape"] and r["logits_shape"][-1] == VOCAB


def test_unpadded_vocabulary_falls_back_and_the_trainer_refuses_it(report):
  assert report["unpadded_embed_spec"][0] != "tensor" and report["unpadded_warnings"]
  from types import SimpleNamespace
  from qwen_audio_jax.model import get_config
  from qwen_audio_jax.train.loop import ConfigMismatchError, check_vocab_divides_mesh
  cfg = get_config("qwen-audio-7b")
  with pytest.raises(ConfigMismatchError, match=r"tensor=2 does not divide the 155947 .*vocab_pad_to=256"):
    check_vocab_divides_mesh(cfg, SimpleNamespace(shape={"tensor": 2}))
  padded = cfg.replace(decoder=dataclasses.replace(cfg.decoder, vocab_pad_to=256))
  check_vocab_divides_mesh(padded, SimpleNamespace(shape={"tensor": 2}))
  check_vocab_divides_mesh(cfg, SimpleNamespace(shape={"tensor": 1}))


def test_unpadded_converted_checkpoint_restores_padded_and_sharded(report):
  r = report["restore"]
  assert r["shapes"] == [[4096, 64], [64, 4096]]
  assert r["real_rows_diff"] == 0.0 and r["padded_rows_max"] == 0.0
  assert r["shardings_match"]


if __name__ == "__main__":
  _worker(sys.argv[1])
