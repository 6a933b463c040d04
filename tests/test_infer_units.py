"""Decoding building blocks without a model: the repetition guard and stop rules on hand-made token
buffers, top-k / top-p filtering against transformers' warpers, per-row limits, settings validation."""

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper  # noqa: E402

from qwen_audio_jax.infer import DecodeSettings, DecodeSettingsError  # noqa: E402
from qwen_audio_jax.infer import logits as logits_lib  # noqa: E402
from qwen_audio_jax.infer import stopping  # noqa: E402
from qwen_audio_jax.infer.settings import row_limits  # noqa: E402


def _buffer(rows, width=24):
  out = np.full((len(rows), width), -7, np.int32)
  for r, row in enumerate(rows):
    out[r, :len(row)] = row
  return jnp.asarray(out)


def test_loop_guard_sees_exactly_the_periods_it_is_given():
  period3 = [5, 6, 7] * 6  # 18 tokens
  noisy = [5, 6, 7] * 5 + [5, 6, 8]
  tokens = _buffer([period3, noisy, [1] * 18])
  t = jnp.asarray(17)
  assert stopping.hits_loop(tokens, t, window=12, max_period=3).tolist() == [True, False, True]
  assert stopping.hits_loop(tokens, t, window=12, max_period=2).tolist() == [False, False, True]
  assert stopping.hits_loop(tokens, jnp.asarray(10), window=12, max_period=3).tolist() == [False, False, False]


def test_stop_sequences_match_only_the_suffix():
  tokens = _buffer([[1, 2, 3], [2, 3, 1], [3, 2, 3]])
  hit = stopping.hits_stop(tokens, jnp.asarray(2), eos_ids=(9,), stop_sequences=((2, 3),))
  assert hit.tolist() == [True, False, True]
  assert stopping.hits_stop(tokens, jnp.asarray(2), eos_ids=(1,), stop_sequences=()).tolist() == [False, True, False]
  # A sequence longer than what was generated never matches (no reads before column 0).
  assert not stopping.hits_stop(tokens, jnp.asarray(0), (), ((9, 1),)).any()


def test_finish_reasons():
  reason = stopping.finish_reason(stop=jnp.asarray([True, False, False, False, False]),
                                  loop=jnp.asarray([True, True, False, False, False]),
                                  length=jnp.asarray([3, 3, 5, 5, 2]), limit=jnp.asarray([5, 5, 5, 8, 8]),
                                  max_new_tokens=jnp.asarray(8))
  assert [stopping.REASONS[int(r)] for r in reason] == ["stop", "loop", "audio_cap", "running", "running"]


@pytest.mark.parametrize("top_k,top_p", [(5, 1.0), (0, 0.7), (40, 0.9), (1, 1.0), (0, 0.05)])
def test_top_k_top_p_equal_transformers_warpers(top_k, top_p):
  logits = np.random.default_rng(top_k).normal(size=(4, 300)).astype(np.float32) * 3
  ref = torch.tensor(logits)
  if top_k:
    ref = TopKLogitsWarper(top_k)(None, ref)
  if top_p < 1.0:
    ref = TopPLogitsWarper(top_p)(None, ref)
  ours = logits_lib.filter_top_k_top_p(jnp.asarray(logits), jnp.int32(top_k), jnp.float32(top_p))
  np.testing.assert_array_equal(np.isfinite(np.asarray(ours)), np.isfinite(ref.numpy()))


def test_row_limits_apply_the_audio_cap():
  s = DecodeSettings(max_new_tokens=100, eos_ids=(1,), max_new_tokens_per_second=10.0, min_new_tokens_cap=16)
  assert row_limits(s, [0.0, 0.5, 3.0, 30.0]) == [100, 16, 30, 100]
  assert row_limits(s.replace(max_new_tokens_per_second=0.0), [3.0]) == [100]


@pytest.mark.parametrize("kw,name", [
    (dict(strategy="nucleus"), "strategy"), (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(strategy="sample", temperature=0.0), "temperature"), (dict(top_p=0.0), "top_p"),
    (dict(strategy="beam", num_beams=1), "num_beams"), (dict(num_beams=4), "num_beams"),
    (dict(eos_ids=()), "eos_ids"), (dict(stop_sequences=((),)), "stop_sequences"),
    (dict(loop_guard_tokens=5), "loop_guard_tokens"), (dict(early_stopping="sometimes"), "early_stopping")])
def test_settings_are_validated_in_one_line(kw, name):
  with pytest.raises(DecodeSettingsError, match=f"decode setting {name}="):
    DecodeSettings(**{"eos_ids": (1,), **kw})


def test_buffer_buckets_share_compiled_programs():
  a = DecodeSettings(max_new_tokens=5, eos_ids=(1,), temperature=0.3, top_p=0.5, seed=3)
  b = DecodeSettings(max_new_tokens=30, eos_ids=(1,))
  assert a.buffer_tokens == b.buffer_tokens == 32 and a.static_key() == b.static_key()
  assert DecodeSettings(max_new_tokens=33, eos_ids=(1,)).static_key() != b.static_key()
