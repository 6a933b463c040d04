"""Source entries of the data config → random-access record sources (grain `MapDataset`s).

Every source is finite, random access and deterministic (sorted scans, fixed TFDS order, synthetic
records as a pure function of their index), which is what the global sample order relies on.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import grain

from qwen_audio_jax.data import conversations, manifests, synthetic
from qwen_audio_jax.data.config import DataConfigError
from qwen_audio_jax.data.corpora import CORPORA

DEFAULT_SYNTHETIC_SIZE = 10000
SOURCE_NAMES = ("synthetic", *CORPORA, "manifest", "jsonl", "eval_jsonl", "conversations")


def _splits(entry: Mapping[str, Any], default: str) -> list[str]:
  return [s.strip() for s in str(entry.get("split", default)).split("+") if s.strip()]


def _paths(entry: Mapping[str, Any]) -> list[str]:
  path = entry.get("path")
  if not path:
    raise DataConfigError(f"data config: source {entry['name']!r} needs 'path' (a jsonl file or a list)")
  return [path] if isinstance(path, str) else [str(p) for p in path]


def _synthetic(entry: Mapping[str, Any]) -> list[Any]:
  tasks = entry.get("tasks") or synthetic.TASKS
  if isinstance(tasks, str):
    tasks = [tasks]
  size = int(entry.get("size", DEFAULT_SYNTHETIC_SIZE))
  seed = int(entry.get("seed", 0))
  return [synthetic.SyntheticSource(task, size, split=split, seed=seed)
          for split in _splits(entry, "train") for task in tasks]


def _corpus(entry: Mapping[str, Any]) -> list[Any]:
  name = entry["name"]
  splits = _splits(entry, CORPORA[name].SPLITS[0])
  if entry.get("data_dir"):
    from qwen_audio_jax.data.tfds_builders import TfdsRecords  # pylint: disable=g-import-not-at-top

    return [TfdsRecords(name, split, entry["data_dir"]) for split in splits]
  if not entry.get("manual_dir"):
    raise DataConfigError(f"data config: source {name!r} needs 'manual_dir' (layout: "
                          f"{CORPORA[name].LAYOUT}) or 'data_dir' (prepared TFDS files)")
  return [CORPORA[name].scan(entry["manual_dir"], split) for split in splits]


def record_parts(entry: Mapping[str, Any]) -> list[Any]:
  """The random-access parts (lists / sources) making up one source entry, in a fixed order."""
  name = entry.get("name")
  if name == "synthetic":
    return _synthetic(entry)
  if name in CORPORA:
    return _corpus(entry)
  if name == "manifest":
    return [manifests.read_manifest(p) for p in _paths(entry)]
  if name == "jsonl":
    return [manifests.read_task_jsonl(p) for p in _paths(entry)]
  if name == "eval_jsonl":
    return [manifests.read_eval_jsonl(p) for p in _paths(entry)]
  if name == "conversations":
    loss_on = str(entry.get("loss_on", "assistant"))
    return [conversations.read_conversations_jsonl(p, loss_on) for p in _paths(entry)]
  raise DataConfigError(f"data config: unknown source name {name!r}; known: {', '.join(SOURCE_NAMES)}")


def make_source(entry: Mapping[str, Any]) -> grain.MapDataset:
  """One source entry as a finite `MapDataset` of records (parts concatenated in order)."""
  parts = [grain.MapDataset.source(part) for part in record_parts(entry)]
  return parts[0] if len(parts) == 1 else grain.MapDataset.concatenate(parts)


def records_of(entry: Mapping[str, Any]) -> Sequence[dict]:
  """All records of a (finite, eval-sized) source entry as a list."""
  dataset = make_source(entry)
  return [dataset[i] for i in range(len(dataset))]
