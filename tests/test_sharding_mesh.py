"""Sharded training on 8 simulated CPU devices equals one device; big params are never replicated.

The multi-device work runs once, in a subprocess (the device count is fixed when JAX starts), and
reports numbers as JSON; the tests below assert on them.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

MESHES = [(8, 1, 1), (1, 8, 1), (1, 4, 2), (2, 2, 2)]
TOL = 1e-5


def _worker(out_path):
  import jax
  jax.config.update("jax_default_matmul_precision", "highest")
  from qwen_audio_jax.sharding import mesh as mesh_lib, partition, rules
  from qwen_audio_jax.train import model_fns, optimizer, state as state_lib, step as step_lib, testing

  cfg = testing.mini_config()
  mcfg = model_fns.resolve_model_config(cfg.model)
  fns = model_fns.build(mcfg)
  opt = optimizer.make_optimizer(cfg.optim, 10)
  host_batch = testing.batch(mcfg, seed=0)
  rng = jax.random.PRNGKey(1)
  out = {"meshes": {}}

  def loss_grads(plan, state):
    batch = partition.host_to_global(host_batch, plan.mesh)
    with partition.activation_context(plan.mesh):
      (loss, _), grads = jax.jit(step_lib.make_loss_and_grads(plan))(
          plan.trainable(state), plan.frozen(state), batch, rng)
    return float(loss), jax.tree_util.tree_map(np.asarray, grads)

  ref_plan = state_lib.make_plan(fns, opt, mesh_lib.make_mesh((1, 1, 1), devices=jax.devices()[:1]), cfg.train)
  ref_state = state_lib.create(ref_plan, 0)
  host_state = jax.tree_util.tree_map(np.asarray, ref_state)
  ref_loss, ref_grads = loss_grads(ref_plan, ref_state)
  out["ref_loss"] = ref_loss
  for shape in MESHES:
    plan = state_lib.make_plan(fns, opt, mesh_lib.make_mesh(shape), cfg.train)
    state = jax.device_put(host_state, plan.shardings)
    loss, grads = loss_grads(plan, state)
    d_grad = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree_util.tree_leaves(grads),
                                                               jax.tree_util.tree_leaves(ref_grads)))
    replicated = partition.replicated_leaves(plan.abstract["params"], plan.shardings["params"], 10**6)
    out["meshes"][str(shape)] = {"d_loss": abs(loss - ref_loss), "d_grad": d_grad, "replicated": replicated}

  # The check that guards runs: a rule table that forgets `embed` leaves big params replicated.
  broken_rules = tuple(r for r in rules.LOGICAL_AXIS_RULES if r[0] not in ("embed", "vocab"))
  plan18 = state_lib.make_plan(fns, opt, mesh_lib.make_mesh((1, 8, 1)), cfg.train)
  broken = partition.logical_to_shardings(fns.logical_axes, plan18.abstract["params"], plan18.mesh, broken_rules)
  try:
    partition.check_sharded(plan18.abstract["params"], broken, 10**6)
    out["check_error"] = None
  except partition.ShardingError as e:
    out["check_error"] = str(e)

  out["full_size"] = _full_size_report(mesh_lib, partition)

  # A checkpoint saved on mesh (data=4, fsdp=2) restores on (2, 1) and on one CPU device, bit for bit.
  from qwen_audio_jax.train import checkpointing
  ckpt_dir = os.path.join(os.path.dirname(out_path), "ckpt")
  plan42 = state_lib.make_plan(fns, opt, mesh_lib.make_mesh((4, 2, 1)), cfg.train)
  ckpt = checkpointing.Checkpoints(ckpt_dir, best_keep=0)
  ckpt.save(3, jax.device_put(host_state, plan42.shardings), {"global_batches": 3})
  ckpt.close()
  out["restore"] = {}
  for shape, devices in (((2, 1, 1), jax.devices()[:2]), ((1, 1, 1), jax.devices()[:1])):
    plan_r = state_lib.make_plan(fns, opt, mesh_lib.make_mesh(shape, devices=devices), cfg.train)
    ckpt = checkpointing.Checkpoints(ckpt_dir, best_keep=0)
    restored, data_state = ckpt.restore(plan_r)
    ckpt.close()
    out["restore"][str(shape)] = {
        "max_diff": max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(
            jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(host_state))),
        "n_leaves": len(jax.tree_util.tree_leaves(restored)),
        "devices": sorted({d.id for a in jax.tree_util.tree_leaves(restored) for d in a.devices()}),
        "shardings_match": all(a.sharding.is_equivalent_to(s, a.ndim) for a, s in zip(
            jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(plan_r.shardings))),
        "data_state": data_state}

  # Created already sharded (jit with out_shardings) == created on one device; the step keeps
  # shardings and donates the old state.
  plan = state_lib.make_plan(fns, opt, mesh_lib.make_mesh((2, 2, 2)), cfg.train)
  state = state_lib.create(plan, 0)
  out["init_max_diff"] = max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(
      jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(host_state)))
  out["init_shardings_match"] = all(
      a.sharding.is_equivalent_to(s, a.ndim) for a, s in zip(jax.tree_util.tree_leaves(state),
                                                              jax.tree_util.tree_leaves(plan.shardings)))
  big = [a for a in jax.tree_util.tree_leaves(state["params"]) if a.nbytes > 10**6]
  out["big_param_shard_bytes"] = [int(a.addressable_shards[0].data.nbytes) for a in big]
  out["big_param_bytes"] = [int(a.nbytes) for a in big]
  train_step = step_lib.make_train_step(plan, cfg.train)
  old_leaf = jax.tree_util.tree_leaves(state["params"])[0]
  new_state, metrics = train_step(state, partition.host_to_global(host_batch, plan.mesh))
  out["step_loss"] = float(metrics["loss"])
  out["donated"] = bool(old_leaf.is_deleted())
  out["step_shardings_match"] = all(
      a.sharding.is_equivalent_to(s, a.ndim) for a, s in zip(jax.tree_util.tree_leaves(new_state),
                                                              jax.tree_util.tree_leaves(plan.shardings)))
  with open(out_path, "w") as f:
    json.dump(out, f)


FULL_PRESET, FULL_MESH = "qwen-audio-7b", (1, 4, 2)
MUTATIONS = {  # logical axes of a module replaced by "no sharding at all" -> the check must name it
    "audio_projector": ("['audio_projector']['kernel']", lambda path: path[0] == "audio_projector"),
    "mlp_gate": ("['decoder']['layers']['mlp']['gate']['kernel']", lambda path: path[:4] == (
        "decoder", "layers", "mlp", "gate")),
}


def _full_size_report(mesh_lib, partition):
  """Shardings of the full-size model's abstract params on an fsdp=4 x tensor=2 mesh (nothing allocated):
  per-leaf bytes and split factor, the check's verdict, and its verdict on mutated logical axes."""
  import math
  import jax
  from jax.sharding import PartitionSpec as P
  from qwen_audio_jax import model as model_lib
  cfg = model_lib.get_config(FULL_PRESET)
  abstract, logical = model_lib.abstract_params(cfg), model_lib.logical_axes(cfg)
  mesh = mesh_lib.make_mesh(FULL_MESH)
  leaves = {}
  shardings = partition.logical_to_shardings(logical, abstract, mesh)
  for (path, leaf), sh in zip(jax.tree_util.tree_flatten_with_path(abstract)[0], jax.tree_util.tree_leaves(shardings)):
    whole = math.prod(leaf.shape)
    leaves[jax.tree_util.keystr(path)] = (whole * leaf.dtype.itemsize, whole // math.prod(sh.shard_shape(leaf.shape)),
                                          whole)

  def verdict(shs):
    try:
      partition.check_sharded(abstract, shs, 1 << 20)
      return None
    except partition.ShardingError as e:
      return str(e)

  out = {"leaves": leaves, "error": verdict(shardings), "mutated": {}}
  for name, (_, hit) in MUTATIONS.items():
    mutated = jax.tree_util.tree_map_with_path(
        lambda path, names, hit=hit: P(*([None] * len(names))) if hit(tuple(k.key for k in path)) else names,
        logical, is_leaf=lambda x: isinstance(x, P))
    out["mutated"][name] = verdict(partition.logical_to_shardings(mutated, abstract, mesh))
  return out


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  out = tmp_path_factory.mktemp("mesh") / "report.json"
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=root,  # this checkout's package, not an installed copy
             XLA_FLAGS="--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
  proc = subprocess.run([sys.executable, __file__, str(out)], env=env, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return json.loads(out.read_text())


@pytest.mark.parametrize("shape", MESHES)
def test_mesh_matches_one_device(report, shape):
  r = report["meshes"][str(shape)]
  assert r["d_loss"] <= TOL, r
  assert r["d_grad"] <= TOL, r


@pytest.mark.parametrize("shape", [s for s in MESHES if s[1] > 1])
def test_no_large_param_replicated_on_fsdp_mesh(report, shape):
  assert report["meshes"][str(shape)]["replicated"] == []


def test_replication_check_names_the_offenders(report):
  err = report["check_error"]
  assert err is not None and "left replicated" in err
  assert "['decoder']['embed']['embedding']" in err and "['decoder']['lm_head']['kernel']" in err


def test_full_size_model_every_big_weight_is_split(report):
  """The check sees every weight of the real 7B model: the real rules pass it, and every leaf of at least
  1 MiB is split; the block matrices and the projector 8 ways (fsdp x tensor), the rest at least 4 ways (the
  155,947-row vocabulary does not divide by tensor=2). Replicated leaves are norm scales, < 2 MiB in all."""
  r = report["full_size"]
  from qwen_audio_jax.model import count_params, get_config
  n_params = sum(n for _, _, n in r["leaves"].values())
  assert n_params >= count_params(get_config(FULL_PRESET)) > 8e9  # every weight is listed
  assert r["error"] is None, r["error"]
  big = {p: (b, f) for p, (b, f, _) in r["leaves"].items() if b >= 1 << 20}
  assert big and all(f >= 2 for _, f in big.values()), [p for p, (_, f) in big.items() if f < 2]
  assert all(f >= 4 for _, f in big.values()), {p: f for p, (_, f) in big.items() if f < 4}
  matrices = [p for p in big if p.endswith("['kernel']") and ("['layers']" in p or "projector" in p)]
  assert len(matrices) == 14 and all(big[p][1] == 8 for p in matrices), {p: big[p] for p in matrices}
  replicated = sum(b for b, f, _ in r["leaves"].values() if f == 1)
  print(f"{FULL_PRESET}: {len(r['leaves'])} leaves, replicated {replicated / 2**20:.2f} MiB per device")
  assert replicated < 2 * 2**20


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_full_size_check_fails_when_a_weight_is_left_unsharded(report, name):
  err = report["full_size"]["mutated"][name]
  assert err is not None and "left replicated" in err and MUTATIONS[name][0] in err, err


def test_state_created_sharded_and_equal_to_single_device(report):
  assert report["init_max_diff"] == 0.0
  assert report["init_shardings_match"]
  assert report["big_param_bytes"], "the mini model must have parameters above 1 MB"
  for shard, whole in zip(report["big_param_shard_bytes"], report["big_param_bytes"]):
    assert shard * 2 <= whole  # each device holds at most half of every big parameter


def test_train_step_donates_and_keeps_shardings(report):
  assert report["donated"]
  assert report["step_shardings_match"]
  assert abs(report["step_loss"] - report["ref_loss"]) <= TOL


@pytest.mark.parametrize("shape,n_devices", [((2, 1, 1), 2), ((1, 1, 1), 1)])
def test_checkpoint_from_4x2_mesh_restores_on_other_meshes(report, shape, n_devices):
  r = report["restore"][str(shape)]
  assert r["max_diff"] == 0.0 and r["n_leaves"] > 20
  assert len(r["devices"]) == n_devices
  assert r["shardings_match"]
  assert r["data_state"] == {"global_batches": 3}


def test_mesh_from_config_fills_and_rejects():
  import jax
  from qwen_audio_jax.sharding import mesh as mesh_lib
  m = mesh_lib.make_mesh((1, -1, 1), devices=jax.devices()[:1])
  assert dict(m.shape) == {"data": 1, "fsdp": 1, "tensor": 1}
  with pytest.raises(mesh_lib.MeshConfigError, match="does not divide"):
    mesh_lib.make_mesh((3, -1, 1), devices=jax.devices()[:1])
  with pytest.raises(mesh_lib.MeshConfigError, match="at most one -1"):
    mesh_lib.make_mesh((-1, -1, 1), devices=jax.devices()[:1])


if __name__ == "__main__":
  _worker(sys.argv[1])
