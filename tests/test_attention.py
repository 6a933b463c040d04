"""Attention implementations against the reference (`dot_product_attention`, the full fp32 score matrix):
blockwise "chunked" (forward and custom backward), the jax.nn argument translation used for cuDNN (run with
jax.nn's "xla" implementation on CPU), Pallas splash attention (interpret mode on CPU); masks with padded
and fully padded rows, left padding, causal, KV-cache prefill/decode offsets, grouped KV heads; the choice
and fallback logging; memory of the chunked path."""

import json
import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen_audio_jax.model import attention as attn
from qwen_audio_jax.model import get_config
from qwen_audio_jax.model.attention_chunked import chunked_attention
from qwen_audio_jax.model.attention_fused import jax_nn_attention, splash_attention

B, H, DH = 3, 4, 16
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def qkv(sq, sk, kvh, seed=0, dtype=jnp.float32):
  r = np.random.default_rng(seed)
  q = r.normal(size=(B, sq, H, DH)) * 2.0
  k, v = r.normal(size=(B, sk, kvh, DH)) * 2.0, r.normal(size=(B, sk, kvh, DH))
  return tuple(jnp.asarray(x, dtype) for x in (q, k, v))


def left_padded(sk, reals=(20, 0, 33)):
  """[B, Sk] bool: row b has reals[b] real tokens at the end (row 1 is all padding)."""
  return jnp.asarray(np.arange(sk)[None, :] >= sk - np.array(reals)[:, None])


# name: (Sq, Sk, KV heads, mask, rows whose every query sees >= 1 key)
CASES = {
    "encoder lengths, one empty clip": (37, 37, H, attn.KeyMask(lengths=jnp.array([37, 0, 11])), [0, 2]),
    "causal left padding, GQA": (33, 33, 2, attn.KeyMask(valid=left_padded(33), causal=True), [0, 2]),
    "causal right padding (prefix)": (33, 33, 2, attn.KeyMask(
        valid=jnp.asarray(np.arange(33)[None] < np.array([[20], [33], [1]])), causal=True), [0, 1, 2]),
    "causal, no padding": (29, 29, 1, attn.KeyMask(causal=True), [0, 1, 2]),
    "prefill into cache at 0": (9, 40, 2, attn.KeyMask(
        valid=jnp.asarray(np.arange(40)[None] < np.array([[9], [9], [9]])) & left_padded(40, (40, 4, 40)),
        causal=True, offset=jnp.int32(0)), [0, 2]),
    "chunk prefill at 5": (7, 40, 2, attn.KeyMask(valid=jnp.asarray(np.arange(40)[None] < 12).repeat(B, 0),
                                                 causal=True, offset=jnp.int32(5)), [0, 1, 2]),
    "decode one query at 23": (1, 40, 2, attn.KeyMask(valid=left_padded(40, (30, 1, 24)) & (jnp.arange(40) < 24),
                                                     causal=True, offset=jnp.int32(23)), [0, 1, 2]),
}


def reference(q, k, v, mask, scale):
  return attn.dot_product_attention(q, k, v, mask.dense(q.shape[1], k.shape[1]), scale)


def rows_with_keys(q, mask, k):
  """Boolean [B, Sq]: queries that see at least one key (others are padding rows)."""
  dense = mask.dense(q.shape[1], k.shape[1])
  return np.ones(q.shape[:2], bool) if dense is None else np.asarray(jnp.broadcast_to(
      dense, (q.shape[0], q.shape[1], k.shape[1])).any(-1))


@pytest.mark.parametrize("case, block", [(c, 8) for c in CASES] + [("causal left padding, GQA", 16),
                                                                    ("decode one query at 23", 16)])
def test_chunked_matches_reference_fp32(case, block):
  sq, sk, kvh, mask, _ = CASES[case]
  q, k, v = qkv(sq, sk, kvh)
  want = reference(q, k, v, mask, DH**-0.5)
  got = chunked_attention(q, k, v, mask.key_valid(sk), mask.causal, mask.offset, DH**-0.5, block)
  err = float(jnp.max(jnp.abs(got - want)))  # fully padded rows included: both average all values
  print(f"{case}, block {block}: max|d| = {err:.1e}")
  assert err <= 3e-6


@pytest.mark.parametrize("case", list(CASES))
def test_chunked_gradients_match_reference(case):
  sq, sk, kvh, mask, _ = CASES[case]
  q, k, v = qkv(sq, sk, kvh, seed=1)
  w = jnp.asarray(np.random.default_rng(2).normal(size=(B, sq, H, DH)), jnp.float32)
  loss = lambda f: lambda q, k, v: jnp.sum(w * f(q, k, v))  # noqa: E731
  ref = jax.grad(loss(lambda q, k, v: reference(q, k, v, mask, 0.3)), argnums=(0, 1, 2))(q, k, v)
  got = jax.jit(jax.grad(loss(lambda q, k, v: chunked_attention(q, k, v, mask.key_valid(sk), mask.causal,
                                                                 mask.offset, 0.3, 8)), argnums=(0, 1, 2)))(q, k, v)
  errs = [float(jnp.max(jnp.abs(a - b)) / (1.0 + jnp.max(jnp.abs(b)))) for a, b in zip(got, ref)]
  print(f"{case}: relative max|d| of dq, dk, dv = {errs}")
  assert max(errs) <= 2e-6


@pytest.mark.parametrize("case", ["causal left padding, GQA", "decode one query at 23", "encoder lengths, one empty clip"])
def test_chunked_bf16_close_to_reference_bf16(case):
  sq, sk, kvh, mask, rows = CASES[case]
  q32, k32, v32 = qkv(sq, sk, kvh, seed=3)
  exact = reference(q32, k32, v32, mask, DH**-0.5)
  q, k, v = (x.astype(jnp.bfloat16) for x in (q32, k32, v32))
  ref16 = reference(q, k, v, mask, DH**-0.5).astype(jnp.float32)
  got = chunked_attention(q, k, v, mask.key_valid(sk), mask.causal, mask.offset, DH**-0.5, 8)
  assert got.dtype == jnp.bfloat16
  err_chunked = float(jnp.max(jnp.abs(got.astype(jnp.float32) - exact)))
  err_ref = float(jnp.max(jnp.abs(ref16 - exact)))
  print(f"{case}: bf16 max|d| vs fp32: chunked {err_chunked:.3f}, reference {err_ref:.3f}")
  assert err_chunked <= 1.5 * err_ref + 1e-2 and err_chunked <= 0.1


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", list(CASES))
def test_heads_major_kv_equals_sequence_major(case, dtype):
  """k/v in the KV cache's order [B, KVH, Sk, Dh] (`kv_heads_major`) give the outputs of [B, Sk, KVH, Dh]:
  the reference and chunked paths (measured: bf16 bit-identical, fp32 max |d| 4.8e-7, the matmuls' other
  summation order)."""
  sq, sk, kvh, mask, _ = CASES[case]
  q, k, v = qkv(sq, sk, kvh, seed=4, dtype=jnp.dtype(dtype))
  kh, vh = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)
  dense = mask.dense(sq, sk)
  want = attn.dot_product_attention(q, k, v, dense, 0.3)
  got = attn.dot_product_attention(q, kh, vh, dense, 0.3, kv_heads_major=True)
  tol = 1e-6 if dtype == "float32" else 0.0
  assert got.dtype == want.dtype
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=0, atol=tol)
  want = chunked_attention(q, k, v, mask.key_valid(sk), mask.causal, mask.offset, 0.3, 8)
  got = chunked_attention(q, kh, vh, mask.key_valid(sk), mask.causal, mask.offset, 0.3, 8, kv_heads_major=True)
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=0, atol=tol)


@pytest.mark.parametrize("case", list(CASES))
def test_jax_nn_translation_matches_reference(case):
  """The argument translation of the cuDNN path (seq lengths / full-shape mask / causal with a
  run-time prefix test) with jax.nn's XLA implementation: equal on every row that sees a key."""
  sq, sk, kvh, mask, rows = CASES[case]
  q, k, v = qkv(sq, sk, kvh, seed=4)
  want = reference(q, k, v, mask, DH**-0.5)
  got = jax.jit(lambda q, k, v: jax_nn_attention(q, k, v, mask, DH**-0.5, "xla"))(q, k, v)
  seen = rows_with_keys(q, mask, k)
  assert bool(jnp.all(jnp.isfinite(got)))
  err = float(jnp.max(jnp.abs(got - want)[seen]))
  print(f"{case}: max|d| on rows with keys = {err:.1e}")
  assert err <= 3e-6


@pytest.mark.parametrize("case", ["encoder lengths, one empty clip", "causal left padding, GQA",
                                  "causal right padding (prefix)", "causal, no padding"])
def test_splash_interpret_matches_reference(case):
  sq, sk, kvh, mask, rows = CASES[case]
  q, k, v = qkv(sq, sk, kvh, seed=5)
  want = reference(q, k, v, mask, DH**-0.5)
  got = jax.jit(lambda q, k, v: splash_attention(q, k, v, mask, DH**-0.5, interpret=True))(q, k, v)
  seen = rows_with_keys(q, mask, k)
  valid = mask.key_valid(sk)
  real_rows = seen if valid is None else seen & np.asarray(valid)[:, :sq]
  assert bool(jnp.all(jnp.isfinite(got)))
  err = float(jnp.max(jnp.abs(got - want)[real_rows]))
  print(f"{case}: splash max|d| on real rows = {err:.1e}")
  assert err <= 3e-6


def test_splash_refuses_a_kv_cache():
  sq, sk, kvh, mask, _ = CASES["decode one query at 23"]
  with pytest.raises(Exception, match="without a KV cache"):
    splash_attention(*qkv(sq, sk, kvh), mask, 0.25, interpret=True)


def test_choose_by_backend_and_case():
  bf, f32 = jnp.bfloat16, jnp.float32
  assert attn.choose("auto", "gpu", bf, 2048, 256, False) == ("cudnn", "")
  assert attn.choose("auto", "gpu", f32, 2048, 256, False)[0] == "xla"
  assert attn.choose("auto", "gpu", bf, 2048, 256, True, sq=1)[0] == "xla"  # decode: no cache transpose
  assert attn.choose("auto", "gpu", bf, 2048, 256, True, sq=300) == ("cudnn", "")  # prefill into the cache
  assert attn.choose("auto", "tpu", bf, 2048, 256, False) == ("splash", "")
  assert attn.choose("auto", "tpu", bf, 2048, 256, True)[0] == "xla"
  assert attn.choose("auto", "cpu", f32, 1500, 256, False) == ("chunked", "")
  assert attn.choose("auto", "cpu", f32, 200, 256, False)[0] == "xla"
  assert attn.choose("auto", "cpu", f32, 4096, 256, True, sq=1)[0] == "xla"  # a decode step: one query
  assert attn.choose("auto", "cpu", f32, 4096, 256, True, sq=17) == ("chunked", "")  # 17 x 4096 > 256 x 256
  assert attn.choose("cudnn", "cpu", bf, 1500, 256, False) == ("chunked", "cudnn needs a GPU (backend is cpu)")
  assert attn.choose("cudnn", "gpu", f32, 1500, 256, False)[0] == "xla"
  assert attn.choose("splash", "cpu", bf, 1500, 256, False)[0] == "chunked"
  assert attn.choose("splash", "tpu", bf, 1500, 256, True)[0] == "xla"
  assert attn.choose("xla", "gpu", bf, 1500, 256, False) == ("xla", "")
  with pytest.raises(ValueError, match="ModelConfig.attention must be one of"):
    attn.choose("flash", "cpu", f32, 10, 256, False)


def test_fallback_is_logged_once_and_runs_chunked(caplog):
  sq, sk, kvh, mask, _ = CASES["causal left padding, GQA"]
  q, k, v = qkv(sq, sk, kvh, seed=6)
  attn._logged.clear()  # pylint: disable=protected-access
  cfg = get_config("tiny-qwen", attention="cudnn", attention_chunk=8)
  with caplog.at_level(logging.INFO, logger=attn.__name__):
    out = attn.attention(q, k, v, mask, 0.25, cfg)
    attn.attention(q, k, v, mask, 0.25, cfg)
    attn.attention(q, k, v, mask, 0.25, cfg.replace(attention="auto"))
  messages = [r.getMessage() for r in caplog.records]
  assert messages == ["attention: 'cudnn' cannot run here: cudnn needs a GPU (backend is cpu); using 'chunked'",
                      "attention: auto -> chunked on cpu"]
  want = chunked_attention(q, k, v, mask.key_valid(sk), True, None, 0.25, 8)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(want))


def test_chunked_never_holds_the_score_matrix():
  """Compiled temp memory of forward + backward: the reference holds the fp32 [H, S, S] scores (64 MiB
  per row at S=2048) and grows as S^2; the chunked path (128-key blocks) grows linearly in S."""
  mask = attn.KeyMask(causal=True)

  def temp_bytes(fn, s):
    shape = jax.ShapeDtypeStruct((1, s, H, DH), jnp.float32)
    grad = jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v)), argnums=(0, 1, 2))
    return jax.jit(grad).lower(shape, shape, shape).compile().memory_analysis().temp_size_in_bytes

  ref = lambda q, k, v: reference(q, k, v, mask, 0.25)  # noqa: E731
  chunked = lambda q, k, v: chunked_attention(q, k, v, None, True, None, 0.25, 128)  # noqa: E731
  sizes = {(name, s): temp_bytes(fn, s) for name, fn in (("ref", ref), ("chunked", chunked)) for s in (1024, 2048)}
  scores = H * 2048 * 2048 * 4
  print({k: f"{v / 2**20:.1f} MiB" for k, v in sizes.items()})
  assert sizes["ref", 2048] >= scores and sizes["ref", 2048] >= 3.5 * sizes["ref", 1024]
  assert sizes["chunked", 2048] <= scores / 2 and sizes["chunked", 2048] <= 2.5 * sizes["chunked", 1024]


def test_splash_interpret_gradients_on_real_rows():
  sq, sk, kvh, mask, _ = CASES["causal left padding, GQA"]
  q, k, v = qkv(sq, sk, kvh, seed=7)
  w = jnp.asarray(np.random.default_rng(8).normal(size=(B, sq, H, DH)), jnp.float32)
  w = w * mask.key_valid(sk)[:, :, None, None]  # loss on real query rows only
  loss = lambda f: lambda q, k, v: jnp.sum(w * f(q, k, v))  # noqa: E731
  ref = jax.grad(loss(lambda q, k, v: reference(q, k, v, mask, 0.3)), argnums=(0, 1, 2))(q, k, v)
  got = jax.jit(jax.grad(loss(lambda q, k, v: splash_attention(q, k, v, mask, 0.3, interpret=True)),
                         argnums=(0, 1, 2)))(q, k, v)
  errs = [float(jnp.max(jnp.abs(a - b)) / (1.0 + jnp.max(jnp.abs(b)))) for a, b in zip(got, ref)]
  print(f"splash: relative max|d| of dq, dk, dv = {errs}")
  assert max(errs) <= 2e-6


def _splash_mesh_worker():
  import jax  # pylint: disable=import-outside-toplevel,reimported
  jax.config.update("jax_default_matmul_precision", "highest")
  from qwen_audio_jax.sharding import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  sq, sk, kvh, mask, _ = CASES["causal left padding, GQA"]
  q, k, v = qkv(sq, sk, kvh, seed=9)
  q, k, v = (jnp.concatenate([x] * 2)[:4] for x in (q, k, v))  # batch 4: divides data x fsdp = 4
  mask = attn.KeyMask(valid=jnp.concatenate([mask.valid] * 2)[:4], causal=True)
  want = reference(q, k, v, mask, 0.25)
  mesh = mesh_lib.make_mesh((2, 2, 2))
  with jax.set_mesh(mesh):
    got = jax.jit(lambda q, k, v: splash_attention(q, k, v, mask, 0.25, interpret=True))(q, k, v)
    text = jax.jit(lambda q, k, v: splash_attention(q, k, v, mask, 0.25, interpret=True)).lower(q, k, v).as_text()
  real = np.asarray(mask.valid)[:, :, None, None]
  err = float(np.max(np.abs(np.asarray(got) - np.asarray(want)) * real))
  print(json.dumps({"err": err, "shard_map": "shard_map" in text or "sdy.manual_computation" in text}))


def test_splash_runs_per_shard_under_a_mesh():
  """8 simulated CPU devices, mesh data=2 x fsdp=2 x tensor=2: the kernel runs under shard_map (batch and
  heads split) and gives the reference on real rows."""
  code = "import sys; sys.path.insert(0, 'tests'); import test_attention as t; t._splash_mesh_worker()"
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  print(out)
  assert out["shard_map"] and out["err"] <= 3e-6
