"""Train checkpoints: Orbax managers for the latest-N full states and the best-K params.

Layout under the workdir (names in `checkpoint_io`, which reads every step as a model checkpoint):
  checkpoints/<step>/{state, data, meta}   state = step, rng, params, [lora], opt_state (arrays);
                                           data = every process's data-iterator state (JSON);
                                           meta = step, model config, tokenizer, LoRA, init (JSON)
  best/<step>/{params, meta} + metrics    params (+ lora) of the best-K evaluations, kept separately
                                           (Orbax's best_fn would otherwise replace latest-N retention)
Each step is written atomically by Orbax (temporary directory, then rename). Saves are asynchronous;
an error in a background save is raised at the next save or at `close()` (never swallowed).
A checkpoint that cannot be read back (e.g. truncated) is reported, moved to `damaged/<step>`, and the
previous one is used (`restore_intact`). Retention never deletes a step folder in place (a kill during
Orbax's recursive delete would leave a half-deleted folder that still looks complete): old steps are
renamed into `<manager dir>/.trash/` (atomic) and the trash is emptied at the next save and at `close()`.
Restore always goes through the *current* plan's abstract state and shardings, so a checkpoint
restores onto any mesh, device count or process count, including a single CPU device.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from qwen_audio_jax import checkpoint_io
from qwen_audio_jax.model import params as params_lib
from qwen_audio_jax.model import qkv_layout
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


TRASH = ".trash"  # Orbax's `todelete_subdir`: not a step name, so never listed as a checkpoint


def _empty_trash(directory: str) -> None:
  if jax.process_index() == 0:
    shutil.rmtree(os.path.join(directory, TRASH), ignore_errors=True)


class Checkpoints:
  """Latest-N full-state checkpoints plus best-K params, under `workdir`."""

  def __init__(self, workdir: str, keep: int = 3, best_keep: int = 1, best_metric: str = "eval_loss",
               best_mode: str = "min", async_save: bool = True):
    self.best_metric = best_metric
    self.workdir = os.path.abspath(workdir)
    self.latest = ocp.CheckpointManager(
        os.path.join(self.workdir, checkpoint_io.RUN_LATEST), item_names=("state", "data", checkpoint_io.RUN_META),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                             cleanup_tmp_directories=True, create=True, todelete_subdir=TRASH))
    self.best = None
    if best_keep > 0:
      self.best = ocp.CheckpointManager(
          os.path.join(self.workdir, checkpoint_io.RUN_BEST), item_names=("params", checkpoint_io.RUN_META),
          options=ocp.CheckpointManagerOptions(
              max_to_keep=best_keep, best_fn=lambda m: float(m[best_metric]), best_mode=best_mode,
              keep_checkpoints_without_metrics=False, enable_async_checkpointing=async_save,
              cleanup_tmp_directories=True, create=True, todelete_subdir=TRASH))

  # -- saving ---------------------------------------------------------------------------------------

  def save(self, step: int, state: dict, data_state: Any = None, meta: dict | None = None) -> bool:
    """Full state at `step` (skipped if that step is already saved). Raises earlier async errors."""
    self.latest.check_for_errors()
    _empty_trash(str(self.latest.directory))
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
    _empty_trash(str(self.best.directory))
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
        _empty_trash(str(mgr.directory))
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

  def restore_intact(self, plan: Plan) -> tuple[dict, Any, int]:
    """(state, data state, step) of the newest checkpoint that reads back.

    A checkpoint whose stored shapes differ from the plan is a different run: CheckpointError. One
    that cannot be read (truncated, half-copied) is reported on stderr, moved to WORKDIR/damaged/, and
    the previous one is tried, so that training continues from the last intact state.
    """
    for step in sorted(self.latest.all_steps(), reverse=True):
      folder = os.path.join(self.latest.directory, str(step))
      _check_state_layout(os.path.join(folder, "state"), plan)
      try:
        state, data = self.restore(plan, step)
        return state, data, step
      except Exception as e:  # pylint: disable=broad-exception-caught
        cause = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"
        aside = self._set_aside(step)
        if jax.process_index() == 0:
          print(f"warning: checkpoint {folder} cannot be read back ({cause}); moved to {aside}, "
                "using the previous checkpoint", file=sys.stderr, flush=True)
    raise checkpoint_io.CheckpointError(f"{self.latest.directory}: no checkpoint could be read back "
                                        f"(damaged ones are under {self.workdir}/damaged)")

  def _set_aside(self, step: int) -> str:
    """Moves a damaged step folder out of checkpoints/ (so the step can be saved again)."""
    aside = os.path.join(self.workdir, "damaged", f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(aside), exist_ok=True)
      shutil.move(os.path.join(self.latest.directory, str(step)), aside)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
    self.latest.reload()
    return aside


def _check_state_layout(state_dir: str, plan: Plan) -> None:
  """Refuses a stored state whose params/adapters differ in shape from the plan (a different model)."""
  try:
    stored = checkpoint_io.ModelCheckpoint(state_dir, "state", state_dir, "", None, plan.fns.cfg, {}).stored()
  except checkpoint_io.CheckpointError:
    return  # unreadable metadata: damage, handled by the restore attempt
  want = checkpoint_io.flatten({k: plan.abstract[k] for k in ("params", "lora") if k in plan.abstract})
  have = {p: s for p, (s, _) in stored.items() if p.split("/")[0] in ("params", "lora")}
  for path in sorted(set(want) | set(have)):
    w, h = tuple(want[path].shape) if path in want else None, have.get(path)
    if w != h:
      raise checkpoint_io.CheckpointError(
          f"{state_dir}: stored {path} has shape {list(h) if h else 'none'}, this run's model needs "
          f"{list(w) if w else 'none'}; the workdir holds a different model (use a new --workdir)")


def restore_params_dir(path: str, plan: Plan) -> dict:
  """Model params to start from, restored straight into the plan's shardings and dtypes.

  `path`: anything `checkpoint_io.resolve` accepts (a converted checkpoint, another run's WORKDIR
  [@best|latest|N], one of its step folders) or a bare Orbax save of the params tree. Stored shapes
  must equal the run's model up to the vocabulary padding (`decoder.vocab_pad_to`; re-padded on restore),
  checked from metadata before anything is read. A LoRA run's adapters are merged into its base weights.
  A checkpoint without the run's MoWE / encoder-PETL parts (`model.mowe`, `model.encoder_petl`) gives
  every parameter it has; the added parts start from the run's fresh init (`added_parts_base`).
  """
  return load_init(init_checkpoint(path, plan), plan)


def added_parts_base(cfg, stored_cfg):
  """The run's model without its MoWE / encoder-PETL blocks when the checkpoint has neither (the new parts
  are then initialised fresh); None when nothing is added."""
  if stored_cfg.mowe is not None or stored_cfg.encoder_petl is not None:
    return None
  if cfg.mowe is None and cfg.encoder_petl is None:
    return None
  return cfg.replace(mowe=None, encoder_petl=None)


def _load_with_added_parts(ckpt: checkpoint_io.ModelCheckpoint, plan: Plan, base, target: Any, seed: int) -> dict:
  base_paths = set(checkpoint_io.flatten(params_lib.abstract_params(base)))
  flat_target = checkpoint_io.flatten(target)
  restored = ckpt.load(target=checkpoint_io.unflatten({p: t for p, t in flat_target.items() if p in base_paths}))
  fresh = jax.jit(plan.fns.init, out_shardings=plan.shardings["params"])(jax.random.PRNGKey(seed))
  merged = checkpoint_io.flatten(fresh)
  merged.update(checkpoint_io.flatten(restored))
  return checkpoint_io.unflatten(merged)


def load_init(ckpt: checkpoint_io.ModelCheckpoint, plan: Plan, seed: int = 0) -> dict:
  """The params of a resolved (shape-checked) checkpoint in the plan's shardings and dtypes, re-padding
  the vocabulary rows when the checkpoint's `vocab_pad_to` differs from the run's; MoWE / encoder-PETL
  parts the checkpoint lacks come from a fresh init with `seed`."""
  target = abstract_with_shardings(plan.abstract["params"], plan.shardings["params"])
  base = added_parts_base(plan.fns.cfg, ckpt.config)
  if base is not None:
    if _as_stored(base, ckpt.config) != base:
      raise checkpoint_io.CheckpointError(f"{ckpt.path}: adding MoWE / encoder-PETL parts to a checkpoint with a "
                                          "different decoder.vocab_pad_to or decoder.fused_qkv is not supported; "
                                          "use the stored values")
    return _load_with_added_parts(ckpt, plan, base, target, seed)
  as_stored = _as_stored(plan.fns.cfg, ckpt.config)
  if as_stored == plan.fns.cfg:
    return ckpt.load(target=target)
  return _restore_as_stored(ckpt, plan, as_stored, target)


def init_checkpoint(path: str, plan: Plan) -> checkpoint_io.ModelCheckpoint:
  """The checkpoint `path` resolves to, with its shapes checked against the plan (no arrays read)."""
  ckpt = checkpoint_io.resolve(path, bare_config=plan.fns.cfg)
  cfg = added_parts_base(plan.fns.cfg, ckpt.config) or plan.fns.cfg
  checkpoint_io.check_shapes({p: s for p, (s, _) in ckpt.stored().items()}, _as_stored(cfg, ckpt.config),
                             ckpt.path)
  return ckpt


def _as_stored(cfg, stored_cfg):
  """The run's model with the checkpoint's vocabulary padding and q/k/v layout (`decoder.fused_qkv`),
  which a restore converts (`_restore_as_stored`); everything else must match."""
  dec, sdec = cfg.decoder, stored_cfg.decoder
  if dec is None or sdec is None:
    return cfg
  pad = sdec.vocab_pad_to if dec.vocab_size == sdec.vocab_size else dec.vocab_pad_to
  fused = sdec.fused_qkv if dec.n_kv_heads == dec.n_heads else dec.fused_qkv
  if (pad, fused) == (dec.vocab_pad_to, dec.fused_qkv):
    return cfg
  return cfg.replace(decoder=dataclasses.replace(dec, vocab_pad_to=pad, fused_qkv=fused))


def _restore_as_stored(ckpt: checkpoint_io.ModelCheckpoint, plan: Plan, as_stored, target: Any) -> dict:
  """Restores a checkpoint whose vocabulary rows are padded differently from the run's (e.g. an
  unpadded conversion into a run with `vocab_pad_to`) or whose q/k/v layout differs (`fused_qkv`), then
  re-arranges q/k/v and re-pads the vocabulary leaves with zero rows (or drops padding rows) straight into
  the plan's shardings."""
  abstract = params_lib.abstract_params(as_stored)
  shardings = partition.logical_to_shardings(params_lib.logical_axes(as_stored), abstract, plan.mesh)
  restored = ckpt.load(target=abstract_with_shardings(abstract, shardings))
  if as_stored.decoder.fused_qkv != plan.fns.cfg.decoder.fused_qkv:  # stack or slice q/k/v on device
    laid = as_stored.replace(decoder=dataclasses.replace(as_stored.decoder, fused_qkv=plan.fns.cfg.decoder.fused_qkv))
    out = partition.logical_to_shardings(params_lib.logical_axes(laid), params_lib.abstract_params(laid), plan.mesh)
    restored = jax.jit(lambda p: qkv_layout.to_layout(p, laid), out_shardings=out)(restored)
  restored = checkpoint_io.flatten(restored)
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
