"""Train checkpoints: Orbax managers for the latest-N full states and the best-K params.

Layout under the workdir:
  checkpoints/<step>/{state, data, meta}   state = step, rng, params, [lora], opt_state (arrays);
                                           data = every process's data-iterator state (JSON);
                                           meta = step, model config, wall time (JSON)
  best/<step>/{params, meta} + metrics    params (+ lora) of the best-K evaluations, kept separately
                                           (Orbax's best_fn would otherwise replace latest-N retention)
Each step is written atomically by Orbax (temporary directory, then rename). Saves are asynchronous;
an error in a background save is raised at the next save or at `close()` (never swallowed).
Restore always goes through the *current* plan's abstract state and shardings, so a checkpoint
restores onto any mesh, device count or process count, including a single CPU device.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from qwen_audio_jax import checkpoint_io
from qwen_audio_jax.model import params as params_lib
from qwen_audio_jax.sharding import partition
from qwen_audio_jax.train.state import Plan


def abstract_with_shardings(abstract: Any, shardings: Any) -> Any:
  return jax.tree_util.tree_map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def _gather_json(obj: Any) -> list[Any]:
  """Every process's JSON-able `obj`, in process order (a no-op gather on one process)."""
  blob = json.dumps(obj).encode()
  if jax.process_count() == 1:
    return [obj]
  sizes = multihost_utils.process_allgather(np.array([len(blob)], np.int64)).reshape(-1)
  padded = np.zeros((int(sizes.max()),), np.uint8)
  padded[:len(blob)] = np.frombuffer(blob, np.uint8)
  rows = multihost_utils.process_allgather(padded).reshape(len(sizes), -1)
  return [json.loads(bytes(r[:n]).decode()) for r, n in zip(rows, sizes)]


class Checkpoints:
  """Latest-N full-state checkpoints plus best-K params, under `workdir`."""

  def __init__(self, workdir: str, keep: int = 3, best_keep: int = 1, best_metric: str = "eval_loss",
               best_mode: str = "min", async_save: bool = True):
    self.best_metric = best_metric
    self.latest = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"), item_names=("state", "data", "meta"),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                             cleanup_tmp_directories=True, create=True))
    self.best = None
    if best_keep > 0:
      self.best = ocp.CheckpointManager(
          os.path.join(os.path.abspath(workdir), "best"), item_names=("params", "meta"),
          options=ocp.CheckpointManagerOptions(
              max_to_keep=best_keep, best_fn=lambda m: float(m[best_metric]), best_mode=best_mode,
              keep_checkpoints_without_metrics=False, enable_async_checkpointing=async_save,
              cleanup_tmp_directories=True, create=True))

  # -- saving ---------------------------------------------------------------------------------------

  def save(self, step: int, state: dict, data_state: Any = None, meta: dict | None = None) -> bool:
    """Full state at `step` (skipped if that step is already saved). Raises earlier async errors."""
    self.latest.check_for_errors()
    if step in self.latest.all_steps():
      return False
    data = {"process_count": jax.process_count(), "states": _gather_json(data_state)}
    return self.latest.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data),
        meta=ocp.args.JsonSave(dict(meta or {}, step=int(step)))), force=True)

  def save_best(self, step: int, state: dict, metrics: dict, meta: dict | None = None) -> bool:
    if self.best is None:
      return False
    self.best.check_for_errors()
    if step in self.best.all_steps():
      return False
    params = {k: state[k] for k in ("params", "lora") if k in state}
    metrics = {k: float(v) for k, v in metrics.items()}
    return self.best.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(dict(meta or {}, step=int(step)))),
        metrics=metrics, force=True)

  def close(self) -> None:
    """Waits for pending saves; raises if any failed."""
    errors = []
    for mgr in (self.latest, self.best):
      if mgr is None:
        continue
      try:
        mgr.wait_until_finished()
        mgr.check_for_errors()
      except Exception as e:  # pylint: disable=broad-exception-caught
        errors.append(e)
      finally:
        mgr.close()
    if errors:
      raise errors[0]

  # -- restoring ------------------------------------------------------------------------------------

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def best_step(self) -> int | None:
    return None if self.best is None else self.best.best_step()

  def restore(self, plan: Plan, step: int | None = None) -> tuple[dict, Any]:
    """(state sharded as `plan` says, this process's data-iterator state or None).

    With a different process count than at save time, process 0's data state is returned: the
    built-in pipeline's state (a global batch counter) is process-count independent, and its
    `set_state` rejects states that would change the sample order.
    """
    step = self.latest.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint under {self.latest.directory}")
    target = abstract_with_shardings(plan.abstract, plan.shardings)
    out = self.latest.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
    data = out["data"]
    if data["process_count"] == jax.process_count():
      return out["state"], data["states"][jax.process_index()]
    logging.warning("checkpoint step %d was saved by %d processes, this run has %d: using process 0's "
                    "data-iterator state", step, data["process_count"], jax.process_count())
    return out["state"], data["states"][0]

  def restore_best_params(self, params_target: Any, step: int | None = None) -> dict:
    """Params (+ lora) of the best (or given) evaluation step, in `params_target`'s shardings."""
    step = self.best_step() if step is None else step
    if step is None:
      raise FileNotFoundError("no best checkpoint saved yet")
    return self.best.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(params_target)))["params"]


def restore_params_dir(path: str, plan: Plan) -> dict:
  """Model params to start from, restored straight into the plan's shardings and dtypes.

  `path` is either a converted model checkpoint (`conversion/convert.py` output: `model_config.json`,
  `metadata.json`, `params/`), whose stored shapes must equal the run's model up to the vocabulary
  padding (`decoder.vocab_pad_to`; re-padded on restore), or a bare Orbax save of the params tree
  (layout of the model's `init_params`).
  """
  path = os.path.abspath(path)
  target = abstract_with_shardings(plan.abstract["params"], plan.shardings["params"])
  if os.path.exists(os.path.join(path, checkpoint_io.CONFIG_FILE)):
    stored = {p: s for p, (s, _) in checkpoint_io.stored_shapes(path).items()}
    as_stored = _with_stored_padding(plan.fns.cfg, checkpoint_io.read_config(path))
    checkpoint_io.check_shapes(stored, as_stored, path)
    path = os.path.join(path, checkpoint_io.PARAMS_DIR)
    if as_stored != plan.fns.cfg:
      return _restore_repadded(path, plan, as_stored, target)
  with ocp.StandardCheckpointer() as ckptr:
    return ckptr.restore(path, target)


def _with_stored_padding(cfg, stored_cfg):
  """The run's model with the checkpoint's vocabulary padding, when only the padding differs."""
  dec, sdec = cfg.decoder, stored_cfg.decoder
  if dec is None or sdec is None or dec.vocab_size != sdec.vocab_size or dec.vocab_pad_to == sdec.vocab_pad_to:
    return cfg
  return cfg.replace(decoder=dataclasses.replace(dec, vocab_pad_to=sdec.vocab_pad_to))


def _restore_repadded(params_dir: str, plan: Plan, as_stored, target: Any) -> dict:
  """Restores a converted checkpoint whose vocabulary rows are padded differently from the run's
  (e.g. an unpadded conversion into a run with `vocab_pad_to`), then re-pads the vocabulary leaves
  with zero rows (or drops padding rows) straight into the plan's shardings."""
  abstract = params_lib.abstract_params(as_stored)
  shardings = partition.logical_to_shardings(plan.fns.logical_axes, abstract, plan.mesh)
  with ocp.StandardCheckpointer() as ckptr:
    restored = checkpoint_io.flatten(ckptr.restore(params_dir, abstract_with_shardings(abstract, shardings)))
  for path, want in checkpoint_io.flatten(target).items():
    x = restored[path]
    if x.shape != want.shape:
      restored[path] = jax.jit(lambda a, shape=want.shape: _resize(a, shape), out_shardings=want.sharding)(x)
  return checkpoint_io.unflatten(restored)


def _resize(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """The leading corner of `x` in an array of `shape`, zero elsewhere."""
  x = x[tuple(slice(0, n) for n in shape)]
  return jnp.pad(x, [(0, n - m) for n, m in zip(shape, x.shape)])


def gather_to_host(tree: Any) -> Any:
  """Full numpy copies of (possibly sharded, multi-host) arrays; call on every process."""
  if jax.process_count() == 1:
    return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))
  return multihost_utils.process_allgather(tree, tiled=True)
