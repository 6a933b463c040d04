"""The sweep config: which checkpoints, which datasets (task, source, recipe, reference numbers), how to
decode. An ml_collections ConfigDict (`configs/eval/*.py`), checked before any model work.

  checkpoints  "name=path,name2=path2" (command-line friendly) or a list of {"name", "path"}
  datasets     list of {"name", "task", "source": a data-source entry (eval_jsonl / jsonl / synthetic /
               corpora, see qwen_audio_jax.data.config), "recipe": "metric@version",
               "fields": recipe fields (e.g. {"lang": "en"}), "reference": {metric: value}, "limit": N}
  paths        name -> manifest path for datasets whose source has `path_key` (set from the command
               line: --config.paths.librispeech_test_clean=/data/ls/test_clean.jsonl); a dataset whose
               path is empty is skipped with a notice
  decode       batch_size, num_beams, max_new_tokens (0 = the task's eval budget), temperature, seed, ...
  long_audio   error | truncate | chunk (chunk is not used in sweeps: one window per sample)
  max_bad_fraction   samples whose audio/prompt is unusable are counted and left out of the metric;
                     above this fraction of a dataset the sweep stops with a message
  mesh         per-process device mesh for the model (data, fsdp, tensor)
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from qwen_audio_jax.data.sources import SOURCE_NAMES
from qwen_audio_jax.eval import recipes
from qwen_audio_jax.prompts import TASKS


class SweepConfigError(ValueError):
  """A sweep config that cannot run (one line naming the field and the cause)."""


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.checkpoints = ""
  c.datasets = []
  c.paths = ml_collections.ConfigDict()
  c.data_root = ""  # relative manifest paths are resolved against it
  c.decode = ml_collections.ConfigDict(dict(
      batch_size=8, num_beams=1, max_new_tokens=0, temperature=0.0, top_k=0, top_p=1.0, seed=0,
      length_penalty=1.0, max_new_tokens_per_second=0.0, loop_guard_tokens=0))
  c.long_audio = "error"
  c.dtype = ""  # "" = the checkpoint's; float32 | bfloat16
  c.max_bad_fraction = 0.0
  c.limit = 0  # > 0: at most this many samples of every dataset (quick checks)
  c.mesh = (1, -1, 1)
  c.chart = True
  return c


def checkpoint_list(c) -> list[dict[str, str]]:
  """[{"name", "path"}] from the string or list form; names unique."""
  value = c.checkpoints
  if isinstance(value, str):
    items = []
    for part in [p.strip() for p in value.split(",") if p.strip()]:
      name, sep, path = part.partition("=")
      if not sep:
        name, path = os.path.basename(os.path.normpath(part)), part
      items.append({"name": name.strip(), "path": path.strip()})
  else:
    items = [dict(x) for x in value]
  if not items:
    raise SweepConfigError("sweep config: no checkpoints (give --config.checkpoints=name=PATH,...)")
  names = [x["name"] for x in items]
  if len(set(names)) != len(names):
    raise SweepConfigError(f"sweep config: checkpoint names must be unique, got {names}")
  return items


def dataset_list(c) -> tuple[list[dict[str, Any]], list[str]]:
  """(datasets to run with their sources resolved, names skipped for lack of a manifest path)."""
  out, skipped = [], []
  names = set()
  for k, raw in enumerate(c.datasets):
    d = dict(raw)
    for key in ("name", "task", "source", "recipe"):
      if key not in d:
        raise SweepConfigError(f"sweep config: datasets[{k}] has no {key!r}")
    if d["name"] in names:
      raise SweepConfigError(f"sweep config: dataset name {d['name']!r} used twice")
    names.add(d["name"])
    if d["task"] not in TASKS:
      raise SweepConfigError(f"sweep config: datasets[{k}] ({d['name']}) task {d['task']!r} is not one of "
                             f"{sorted(TASKS)}")
    recipes.get(d["recipe"])  # unknown recipe: one line listing the names
    source = dict(d["source"])
    if source.get("name") not in SOURCE_NAMES:
      raise SweepConfigError(f"sweep config: datasets[{k}] ({d['name']}) source name {source.get('name')!r}; "
                             f"known: {', '.join(SOURCE_NAMES)}")
    key = source.pop("path_key", None)
    if key is not None:
      path = str(c.paths.get(key, "") or "")
      if not path:
        skipped.append(d["name"])
        continue
      source["path"] = path if os.path.isabs(path) or not c.data_root else os.path.join(c.data_root, path)
    d["source"] = source
    d.setdefault("fields", {})
    d.setdefault("reference", {})
    d["limit"] = int(d.get("limit", 0) or c.limit or 0)
    out.append(d)
  if not out:
    raise SweepConfigError("sweep config: no dataset to run" +
                           (f" (no manifest path for {', '.join(skipped)}; set --config.paths.NAME=FILE)"
                            if skipped else ""))
  return out, skipped
