"""Remat policies keep what their names say: activation bytes one 7B-width layer keeps for its backward
(jax.vjp residuals, traced only), per example in bf16 (bench/remat_policies.py)."""

from bench import remat_policies

MIB = 2 ** 20


def test_saved_activations_follow_the_policy_names():
  rows = {r["policy"]: r for r in remat_policies.layer_residuals_7b(
      ("none", "minimal", "save_dot_except_mlp", "save_qkv_proj", "save_out_proj", "full"))}
  tokens, d, mlp = 1024, 4096, 11008
  qkv = 3 * tokens * d * 2 / MIB  # q, k, v projections (bf16): 24 MiB
  context_and_mlp_in = (tokens * d + 2 * tokens * mlp) * 2 / MIB  # attention output, gate and up: 51 MiB
  dec = {p: r["decoder_trained_mb"] for p, r in rows.items()}
  print({p: round(v, 1) for p, v in dec.items()})
  assert qkv <= dec["save_qkv_proj"] <= qkv + 1.5
  assert qkv + context_and_mlp_in <= dec["minimal"] <= dec["none"] / 2
  assert dec["full"] <= 1.5 and dec["save_out_proj"] <= dec["save_qkv_proj"] <= dec["save_dot_except_mlp"]
  enc = {p: r["encoder_trained_mb"] for p, r in rows.items()}
  assert 3 * 1500 * 1280 * 2 / MIB <= enc["save_qkv_proj"] <= enc["minimal"] <= enc["none"] / 2
  for r in rows.values():  # a frozen layer keeps no more than a trained one
    assert r["decoder_frozen_mb"] <= r["decoder_trained_mb"] and r["encoder_frozen_mb"] <= r["encoder_trained_mb"]
