"""Retention never deletes a step folder in place: Orbax's recursive delete, killed half-way, would leave a
half-deleted folder named like a complete step (and the best-K manager could later pick it). Old steps are
renamed into `.trash/` (atomic) and the trash is emptied at the next save and at close."""

import os

import jax.numpy as jnp
from orbax.checkpoint._src.path import deleter

from qwen_audio_jax.train import checkpointing


def _names(folder):
  return sorted(os.listdir(folder))


def test_old_steps_are_renamed_not_deleted_in_place(tmp_path, monkeypatch):
  in_place = []
  original = deleter.StandardCheckpointDeleter._delete_step_permanently

  def record(self, step, target):
    in_place.append((step, str(target)))
    return original(self, step, target)

  monkeypatch.setattr(deleter.StandardCheckpointDeleter, "_delete_step_permanently", record)
  ckpt = checkpointing.Checkpoints(str(tmp_path), keep=1, best_keep=1, async_save=True)
  state = {"params": {"w": jnp.arange(4.0)}, "step": jnp.zeros((), jnp.int32)}
  for step, loss in ((2, 1.0), (4, 0.5), (6, 0.7), (8, 0.9)):
    ckpt.save(step, state, {"position": step})
    ckpt.save_best(step, state, {"eval_loss": loss})
  ckpt.close()
  assert in_place == []
  assert _names(tmp_path / "checkpoints") == ["8"]
  assert _names(tmp_path / "best") == ["4"]  # the best step survives newer, worse ones
