"""NaN/Inf policy: a step with a non-finite loss or gradient never changes params or optimizer state (bit
for bit), is counted, names its examples, and the run stops after train.max_nonfinite_in_a_row in a row
("skip") or at the first ("halt") with one line (exit 2 through the CLI).
"""

import os

import jax
import numpy as np
import pytest

from qwen_audio_jax.sharding import mesh as mesh_lib, partition
from qwen_audio_jax.train import (loop, model_fns, nonfinite, optimizer, preflight, state as state_lib,
                                  step as step_lib, testing)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _host(tree):
  return jax.tree_util.tree_map(lambda x: np.array(x, copy=True), tree)


def _assert_same(a, b):
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(la) == len(lb) > 10
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(x, y)  # NaN == NaN here: a NaN written into params would fail


@pytest.fixture(scope="module")
def stepped():
  """Steps of the mini model: good (lr 0: warm-up), good, NaN in the mel, +Inf in the mel, good."""
  mesh = mesh_lib.make_mesh((1, 1, 1))
  cfg = testing.mini_config()
  mcfg = model_fns.resolve_model_config(cfg.model)
  plan = state_lib.make_plan(model_fns.build(mcfg), optimizer.make_optimizer(cfg.optim, 10), mesh, cfg.train,
                             cfg.lora)
  state = state_lib.create(plan, 0)
  step = step_lib.make_train_step(plan, cfg.train)
  batches = [testing.batch(mcfg, seed=s, batch_size=2) for s in range(5)]
  batches[2]["audio_mel"][1, 3, 5] = np.nan
  batches[3]["audio_mel"][0, 0, 0] = np.inf
  states, metrics = [_host(state)], []
  for b in batches:
    state, m = step(state, partition.host_to_global(b, mesh))
    states.append(_host(state))
    metrics.append({k: float(v) for k, v in _host(m).items() if np.ndim(v) == 0})
  return states, metrics


def test_nonfinite_step_keeps_params_and_optimizer_state_bit_for_bit(stepped):
  states, metrics = stepped
  assert [m["nonfinite"] for m in metrics] == [0.0, 0.0, 1.0, 1.0, 0.0]
  assert not np.isfinite(metrics[2]["loss"]) and not np.isfinite(metrics[3]["loss"])
  for k in ("params", "opt_state"):
    _assert_same(states[3][k], states[2][k])  # NaN step: unchanged
    _assert_same(states[4][k], states[2][k])  # Inf step: unchanged
  assert [int(s["step"]) for s in states] == [0, 1, 2, 3, 4, 5]  # the step (data position, RNG) advances


def test_finite_steps_do_update(stepped):
  states, metrics = stepped
  assert np.isfinite(metrics[4]["loss"]) and metrics[4]["nonfinite"] == 0.0
  for a, b in ((states[1], states[2]), (states[4], states[5])):
    changed = [not np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a["params"]),
                                                         jax.tree_util.tree_leaves(b["params"]))]
    assert sum(changed) > 10
  assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(states[5]["params"]))


def test_guard_skips_then_halts_after_k_in_a_row(capsys):
  guard = nonfinite.Guard(limit=3)
  bad, good = {"nonfinite": 1.0, "loss": float("nan"), "grad_norm": float("nan")}, {"nonfinite": 0.0}
  guard.observe(1, bad, ["synthetic:7 (a.wav)", None])
  guard.observe(2, bad, ["synthetic:8 (b.wav)"])
  guard.observe(3, good, ["x"])  # resets the count in a row
  guard.observe(4, bad, ["c"])
  guard.observe(5, bad, ["d"])
  with pytest.raises(nonfinite.NonFiniteError, match=r"3 step\(s\) in a row up to step 6.*: e, f"):
    guard.observe(6, bad, ["e", "f"])
  err = capsys.readouterr().err
  assert "step 1: non-finite loss nan" in err and "synthetic:7 (a.wav)" in err and "update skipped" in err
  assert guard.total == 5 and err.count("warning: step") == 5


def test_halt_policy_stops_at_the_first_and_zero_never_stops():
  cfg = testing.mini_config(nonfinite_policy="halt")
  with pytest.raises(nonfinite.NonFiniteError):
    nonfinite.Guard.from_config(cfg.train).observe(1, {"nonfinite": 1.0, "loss": 1.0, "grad_norm": np.inf}, [])
  never = nonfinite.Guard.from_config(testing.mini_config(max_nonfinite_in_a_row=0).train)
  for s in range(50):
    never.observe(s, {"nonfinite": 1.0, "loss": np.nan, "grad_norm": np.nan}, None)
  assert never.total == 50
  assert nonfinite.NonFiniteError in loop.USER_ERRORS  # one line and exit 2 through the CLI


@pytest.mark.parametrize("key,value", [("nonfinite_policy", "ignore"), ("max_nonfinite_in_a_row", -1)])
def test_bad_policy_config_is_one_line(key, value):
  cfg = testing.mini_config(**{key: value})
  with pytest.raises(preflight.RunConfigError, match=f"train.{key}"):
    preflight.check_numbers(cfg)
