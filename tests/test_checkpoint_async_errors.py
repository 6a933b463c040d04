"""Async checkpoint failures are raised (at the next save or at close), never swallowed; latest-N and
best-K are kept separately."""

import jax.numpy as jnp
import numpy as np
import pytest
from orbax.checkpoint._src.path import atomicity

from qwen_audio_jax.train import checkpointing


def _state(v: float) -> dict:
  return {"step": jnp.asarray(int(v), jnp.int32), "params": {"w": jnp.full((4, 3), v, jnp.float32)}}


@pytest.fixture
def broken_commit(monkeypatch):
  async def fail(self, *args, **kwargs):
    raise OSError("injected: disk full while committing the checkpoint")
  monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", fail)


def test_failed_async_save_raises_at_next_save(tmp_path, broken_commit):
  ckpt = checkpointing.Checkpoints(str(tmp_path), best_keep=0)
  ckpt.save(1, _state(1), {"global_batches": 1})  # returns while the commit runs in the background
  with pytest.raises(Exception, match="injected"):
    ckpt.save(2, _state(2), {"global_batches": 2})
  ckpt.close()  # the error was reported once; closing afterwards does not hang
  assert checkpointing.Checkpoints(str(tmp_path), best_keep=0).latest_step() is None


def test_failed_async_save_raises_at_close(tmp_path, broken_commit):
  ckpt = checkpointing.Checkpoints(str(tmp_path), best_keep=0)
  ckpt.save(1, _state(1), {"global_batches": 1})
  with pytest.raises(Exception, match="injected"):
    ckpt.close()
  assert checkpointing.Checkpoints(str(tmp_path), best_keep=0).latest_step() is None  # nothing committed


def test_latest_n_and_best_k_are_separate(tmp_path):
  ckpt = checkpointing.Checkpoints(str(tmp_path), keep=2, best_keep=1)
  for step, loss in ((1, 3.0), (2, 1.0), (3, 2.0), (4, 5.0)):
    ckpt.save(step, _state(step), {"global_batches": step})
    ckpt.save_best(step, _state(step), {"eval_loss": loss})
  ckpt.close()
  ckpt = checkpointing.Checkpoints(str(tmp_path), keep=2, best_keep=1)
  assert ckpt.latest.all_steps() == [3, 4] and ckpt.latest_step() == 4
  assert ckpt.best.all_steps() == [2] and ckpt.best_step() == 2
  import jax
  target = {"params": {"w": jax.ShapeDtypeStruct((4, 3), jnp.float32)}}
  best = ckpt.restore_best_params(target)
  np.testing.assert_array_equal(np.asarray(best["params"]["w"]), 2.0)
  ckpt.close()


def test_training_error_is_not_hidden_by_a_failing_save(tmp_path, monkeypatch):
  import os
  import runpy
  from qwen_audio_jax.train import loop
  tiny = runpy.run_path(os.path.join(os.path.dirname(__file__), "..", "configs", "tiny_synthetic.py"))

  def crash(*args, **kwargs):
    raise RuntimeError("injected: training step failed")

  def failing_close(self):
    raise OSError("injected: checkpoint close failed too")

  monkeypatch.setattr(loop, "_loop", crash)
  monkeypatch.setattr(checkpointing.Checkpoints, "close", failing_close)
  with pytest.raises(RuntimeError, match="training step failed"):
    loop.train(tiny["get_config"]("1"), str(tmp_path))
