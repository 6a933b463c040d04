"""Everything about a run that can be checked before anything is written or compiled.

Each mistake raises one exception with a one-line message naming the config field, file or flag
(`USER_ERRORS`; the CLI prints it and exits 2). Covered: numbers and divisibility (batch, gradient
accumulation, mesh), the model preset and its fields, the data fields and files, the initial
checkpoint (exists, same shapes), starting a fine-tuning config from random weights, and resuming a
workdir that holds a run of another model or data layout.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import jax
from etils import epath

from qwen_audio_jax import checkpoint_io
from qwen_audio_jax.data import config as data_config
from qwen_audio_jax.data.manifests import ManifestError
from qwen_audio_jax.data.records import ManualDirError, RecordError
from qwen_audio_jax.model import config as model_config
from qwen_audio_jax.prompts import PromptError
from qwen_audio_jax.sharding.mesh import MeshConfigError
from qwen_audio_jax.sharding.partition import ShardingError
from qwen_audio_jax.train.freeze import FreezeConfigError
from qwen_audio_jax.train.lora import LoraConfigError

ORDER_KEYS = ("name", "split", "weight", "tasks", "size", "seed", "path", "manual_dir", "data_dir")
LARGE_MODEL_PARAMS = 1_000_000_000


class RunConfigError(ValueError):
  """A run-config mistake found before anything is written (one line)."""


class DataError(ValueError):
  """The data yields nothing to learn from (every example rejected, or no answer tokens)."""


USER_ERRORS = (RunConfigError, DataError, data_config.DataConfigError, ManifestError, ManualDirError, RecordError,
               PromptError, MeshConfigError, ShardingError, FreezeConfigError, LoraConfigError,
               checkpoint_io.CheckpointError)


def check_numbers(cfg) -> None:
  """Steps, batch sizes, accumulation and intervals (before the mesh exists)."""
  t = cfg.train
  for key, value, low in (("train.total_steps", t.total_steps, 1), ("train.batch_size", t.batch_size, 1),
                          ("train.grad_accum_steps", t.grad_accum_steps, 1),
                          ("checkpoint.every_steps", cfg.checkpoint.every_steps, 1),
                          ("eval.every_steps", cfg.eval.every_steps, 0), ("train.mel_frames", t.mel_frames, 0)):
    if int(value) < low:
      raise RunConfigError(f"config {key}={value} must be >= {low}")
  if int(t.batch_size) % int(t.grad_accum_steps):
    raise RunConfigError(f"config train.batch_size={t.batch_size} is not divisible by "
                         f"train.grad_accum_steps={t.grad_accum_steps}")
  if int(cfg.eval.every_steps) and int(cfg.eval.batch_size) < 1:
    raise RunConfigError(f"config eval.batch_size={cfg.eval.batch_size} must be >= 1")
  if str(t.get("nonfinite_policy", "skip")) not in ("skip", "halt"):
    raise RunConfigError(f"config train.nonfinite_policy={t.nonfinite_policy!r} must be 'skip' or 'halt'")
  if int(t.get("max_nonfinite_in_a_row", 0)) < 0:
    raise RunConfigError(f"config train.max_nonfinite_in_a_row={t.max_nonfinite_in_a_row} must be >= 0")
  if t.init_params_dir and t.fork_from:
    raise RunConfigError("config train.init_params_dir and train.fork_from are both set; give one")


def check_mesh_batches(cfg, mesh) -> None:
  """Every (micro-)batch splits evenly over the batch axes of the mesh and over the processes."""
  ways = mesh.shape["data"] * mesh.shape["fsdp"]
  micro = int(cfg.train.batch_size) // int(cfg.train.grad_accum_steps)
  checks = [("train.batch_size / train.grad_accum_steps", micro)]
  if int(cfg.eval.every_steps):
    checks.append(("eval.batch_size", int(cfg.eval.batch_size)))
  for name, size in checks:
    for what, n in ((f"mesh data x fsdp = {ways} devices", ways), (f"{jax.process_count()} processes",
                                                                   jax.process_count())):
      if size % n:
        raise RunConfigError(f"config {name} = {size} does not split over {what}")


def layout(cfg, entries: list[dict]) -> dict[str, Any]:
  """What a checkpoint's state and data position depend on besides the model (must match to resume)."""
  return {
      "data.sources": [{k: str(e[k]) for k in ORDER_KEYS if k in e} for e in entries],
      "data.family": str(cfg.data.family), "data.vocab_path": str(cfg.data.vocab_path),
      "train.batch_size": int(cfg.train.batch_size), "train.data_seed": int(cfg.train.data_seed),
      "train.freeze": list(cfg.train.freeze), "train.trainable": list(cfg.train.trainable),
      "lora.enabled": bool(cfg.lora.enabled), "lora.rank": int(cfg.lora.rank),
      "lora.targets": list(cfg.lora.targets), "optim.clipping": float(cfg.optim.clip_norm or 0) > 0,
  }


def _flat(d: Any, prefix: str) -> dict[str, Any]:
  if isinstance(d, (dict, list, tuple)):
    out = {}
    for k, v in (d.items() if isinstance(d, dict) else enumerate(d)):
      out.update(_flat(v, f"{prefix}.{k}"))
    return out or {prefix: d}
  return {prefix: d}


def differences(stored: dict, new: dict, limit: int = 4) -> list[str]:
  a, b = _flat(stored.get("model", {}), "model"), _flat(new["model"], "model")
  if "layout" in stored:
    a.update(_flat(stored["layout"], "")), b.update(_flat(new["layout"], ""))
  keys = sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))
  shown = [f"{k.lstrip('.')}: {_short(a.get(k, '<absent>'))} -> {_short(b.get(k, '<absent>'))}" for k in keys[:limit]]
  return shown + ([f"and {len(keys) - limit} more"] if len(keys) > limit else [])


def _short(value: Any) -> str:
  text = json.dumps(value) if not isinstance(value, str) else value
  return text if len(text) <= 60 else text[:20] + "..." + text[-37:]


def check_resume(workdir: str, record: dict, fork_from: str) -> tuple[bool, dict]:
  """(whether `workdir` holds checkpoints to resume, its stored config.json or {}), after refusing a
  run of a different model or layout. A workdir without checkpoints describes nothing yet."""
  steps = checkpoint_io.run_steps(workdir, checkpoint_io.RUN_LATEST)
  if steps and fork_from:
    raise RunConfigError(f"--workdir={workdir} already holds a run (checkpoints {steps}); "
                         "train.fork_from starts a NEW run: give a new --workdir")
  path = epath.Path(workdir) / checkpoint_io.RUN_CONFIG
  if not steps or not path.exists():
    return bool(steps), {}
  try:
    stored = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise RunConfigError(f"{path}: unreadable ({e}); the workdir's run cannot be checked") from None
  diff = differences(stored, record)
  if diff:
    raise RunConfigError(f"--workdir={workdir} holds a run with a different model or data layout ("
                         f"{'; '.join(diff)}); resume it with its own config, or start a new run with a new "
                         f"--workdir (add --config.train.fork_from={workdir} to start from its weights)")
  return True, stored


def check_init(cfg, plan, resuming: bool) -> checkpoint_io.ModelCheckpoint | None:
  """The checkpoint a new run starts from (shapes checked), or None for a random init (if allowed)."""
  from qwen_audio_jax.train import checkpointing  # pylint: disable=import-outside-toplevel
  if resuming:
    return None
  key = "train.fork_from" if cfg.train.fork_from else "train.init_params_dir"
  path = cfg.train.fork_from or cfg.train.init_params_dir
  if path:
    try:
      return checkpointing.init_checkpoint(path, plan)
    except checkpoint_io.CheckpointError as e:
      raise checkpoint_io.CheckpointError(f"config {key}: {e}") from None
  fine_tuning = plan.use_lora or bool(tuple(cfg.train.freeze))
  if fine_tuning and not bool(cfg.train.get("allow_random_init", False)):
    what = "LoRA" if plan.use_lora else f"freezes {list(cfg.train.freeze)}"
    raise RunConfigError(f"config {what} but train.init_params_dir is empty: this would fine-tune random "
                         "weights; set --config.train.init_params_dir=CONVERTED_CHECKPOINT (or a run's "
                         "WORKDIR), or --config.train.allow_random_init=true")
  return None


def init_record(ckpt: checkpoint_io.ModelCheckpoint | None) -> dict | None:
  """What a run keeps about its starting checkpoint (for export: source configs and tokenizer)."""
  if ckpt is None:
    return None
  meta = ckpt.metadata
  sources = [{"format": s["format"], "config": s.get("config")} for s in meta.get("sources", [])]
  return {"path": ckpt.path, "kind": ckpt.kind, "step": ckpt.step, "sources": sources,
          "tokenizer": meta.get("tokenizer")}


def warn_large_synthetic(entries: list[dict], n_params: int) -> None:
  """A large model on the built-in synthetic tones is almost surely a forgotten data flag."""
  if n_params >= LARGE_MODEL_PARAMS and any(e.get("name") == "synthetic" for e in entries):
    bar = "!" * 100
    print(f"{bar}\nWARNING: a {n_params / 1e9:.1f} B-parameter model is training on the built-in SYNTHETIC "
          "tone set (data.sources).\nSet --config.data.train_manifest=FILE.jsonl or "
          f"--config.data.corpus=NAME:DIR:SPLIT to train on your data.\n{bar}", file=sys.stderr, flush=True)


def model_params(mcfg: model_config.ModelConfig) -> int:
  return sum(math.prod(s) for s in checkpoint_io.param_shapes(mcfg).values())
