"""Helpers shared by the manual-download corpus readers: directory checks and sorted file listing."""

from __future__ import annotations

import pathlib
from typing import Iterable, Sequence

from qwen_audio_jax.data.records import ManualDirError

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a")


def require_dir(dataset: str, path: pathlib.Path, layout: str) -> pathlib.Path:
  """Returns `path` if it is a directory, else raises ManualDirError naming dataset, path and layout."""
  path = pathlib.Path(path)
  if not path.is_dir():
    raise ManualDirError(f"{dataset}: manual dir {path} not found; expected layout: {layout}")
  return path


def require_file(dataset: str, path: pathlib.Path, layout: str) -> pathlib.Path:
  path = pathlib.Path(path)
  if not path.is_file():
    raise ManualDirError(f"{dataset}: file {path} not found; expected layout: {layout}")
  return path


def first_existing(candidates: Iterable[pathlib.Path]) -> pathlib.Path | None:
  for candidate in candidates:
    if candidate.exists():
      return candidate
  return None


def check_split(dataset: str, split: str, splits: Sequence[str]) -> None:
  if split not in splits:
    raise KeyError(f"{dataset}: unknown split {split!r}; known: {', '.join(splits)}")


def audio_files(root: pathlib.Path, pattern: str = "*") -> list[pathlib.Path]:
  """Audio files under `root` matching `pattern` (recursive glob allowed), sorted by path."""
  return sorted(p for p in root.glob(pattern) if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def non_empty(dataset: str, records: list, where: pathlib.Path, layout: str) -> list:
  if not records:
    raise ManualDirError(f"{dataset}: no examples found under {where}; expected layout: {layout}")
  return records
