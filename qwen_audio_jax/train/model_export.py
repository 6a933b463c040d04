"""A training run's best (or latest) params → a model checkpoint in the converted format, the one
`Pipeline.from_checkpoint`, the `infer` CLI and evaluation sweeps read, with the tokenizer inside.

  path = export_model(workdir, out_dir)            # best/ (by the run's eval.best_metric), else latest
The model config, data family and vocabulary come from WORKDIR/config.json; the params from
WORKDIR/best/<step>/params or WORKDIR/checkpoints/<step>/state (a LoRA run is written merged). A
vocabulary file (`data.vocab_path`) is copied to OUT/tokenizer/ and recorded relative to OUT in the
metadata's tokenizer identity, so the exported checkpoint can be moved and still decodes its ids.
"""

from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import orbax.checkpoint as ocp

from qwen_audio_jax import checkpoint_io
from qwen_audio_jax.model import config as model_config
from qwen_audio_jax.train import lora as lora_lib

TOKENIZER_DIR = "tokenizer"


class ExportError(ValueError):
  """The run has nothing to export (one line: the folder and what is missing)."""


def _steps(folder: str) -> list[int]:
  if not os.path.isdir(folder):
    return []
  return sorted(int(d) for d in os.listdir(folder)
                if d.isdigit() and os.path.exists(os.path.join(folder, d, "_CHECKPOINT_METADATA")))


def best_step(workdir: str, metric: str, mode: str) -> int | None:
  """The kept best/ step whose stored metrics are best by `metric` (`mode` min|max); NaN never wins."""
  scored = []
  for step in _steps(os.path.join(workdir, "best")):
    with open(os.path.join(workdir, "best", str(step), "metrics", "metrics")) as f:
      value = float(json.load(f).get(metric, math.nan))
    if not math.isnan(value):
      scored.append((value if mode == "min" else -value, -step, step))  # ties: the later step
  return min(scored)[2] if scored else None


def read_tree(path: str, keys: tuple[str, ...] = ("params", "lora")) -> dict:
  """The `keys` subtrees of a stored Orbax item (best/<step>/params, checkpoints/<step>/state) as host
  numpy arrays, read one leaf after another (the optimizer state of a full state is not read)."""
  with ocp.StandardCheckpointer() as ckptr:
    meta = ckptr.metadata(path)
    tree = meta.item_metadata.tree if hasattr(meta, "item_metadata") else meta
  paths = [p for p, m in checkpoint_io.flatten(tree).items() if hasattr(m, "shape") and p.split("/")[0] in keys]
  item = checkpoint_io.unflatten({p: np.zeros(0) for p in paths})
  restore_args = checkpoint_io.unflatten({p: ocp.RestoreArgs(restore_type=np.ndarray) for p in paths})
  with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as ckptr:
    return ckptr.restore(path, args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args,
                                                            partial_restore=True))


def export_model(workdir: str, out_dir: str, *, overwrite: bool = False) -> tuple[str, int, str]:
  """Writes the run's best params (else its latest) to `out_dir`; returns (out_dir, step, "best"|"latest")."""
  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(config_path):
    raise ExportError(f"{workdir}: not a training run (config.json missing)")
  with open(config_path) as f:
    record = json.load(f)
  run, mcfg = record["config"], model_config.from_dict(record["model"])
  step = best_step(workdir, run["eval"].get("best_metric", "eval_loss"), run["eval"].get("best_mode", "min"))
  if step is not None:
    kind, tree = "best", read_tree(os.path.join(workdir, "best", str(step), "params"))
  else:
    latest = _steps(os.path.join(workdir, "checkpoints"))
    if not latest:
      raise ExportError(f"{workdir}: no finished checkpoint under best/ or checkpoints/")
    step, kind = latest[-1], "latest"
    tree = read_tree(os.path.join(workdir, "checkpoints", str(step), "state"))
  params = tree["params"]
  if "lora" in tree:
    lora = run["lora"]
    params = lora_lib.merge(params, tree["lora"], lora_lib.scale(int(lora["rank"]), float(lora["alpha"])))
  family, vocab = run["data"]["family"], run["data"].get("vocab_path")

  def copy_vocab(tmp: str) -> dict:
    tokenizer = {"family": family}
    if vocab:
      os.makedirs(os.path.join(tmp, TOKENIZER_DIR))
      shutil.copy2(vocab, os.path.join(tmp, TOKENIZER_DIR, os.path.basename(vocab)))
      tokenizer["vocab_path"] = f"{TOKENIZER_DIR}/{os.path.basename(vocab)}"
    return {"tokenizer": tokenizer}

  checkpoint_io.save_model_checkpoint(
      out_dir, mcfg, params, {"source": f"training run {os.path.abspath(workdir)} ({kind} step {step})",
                              "dtype": mcfg.param_dtype}, overwrite=overwrite, write_extra=copy_vocab)
  return out_dir, step, kind
