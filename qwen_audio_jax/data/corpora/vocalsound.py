"""VocalSound (vs_release_16k) from its published layout: audio_16k/<speaker>_<n>_<label>.wav.

The label is the last `_` field of the file name (cough, laughter, sigh, sneeze, sniff, throatclearing).
The split comes from the release's split lists, first found of:
  <manual_dir>/datafiles/{tr,val,te}.json          ({"data": [{"wav": ".../f0003_0_cough.wav"}, ...]})
  <manual_dir>/{datasplit,meta}/{tr,val,te}_meta.csv  (first column: a speaker id such as "f0003"
                                                       or a file name; a header row is ignored)
"""

from __future__ import annotations

import csv
import json
import pathlib

from qwen_audio_jax.data.corpora import common
from qwen_audio_jax.data.records import ManualDirError, make_record

NAME = "vocalsound"
TASK = "vsc"
SPLITS = ("train", "validation", "test")
_PREFIX = {"train": "tr", "validation": "val", "test": "te"}
LAYOUT = ("<manual_dir>/audio_16k/<speaker>_<n>_<label>.wav + <manual_dir>/datafiles/{tr,val,te}.json "
          "or <manual_dir>/{datasplit,meta}/{tr,val,te}_meta.csv")


def split_keys(manual_dir: pathlib.Path, split: str) -> set[str]:
  """File stems or speaker ids that belong to `split`."""
  prefix = _PREFIX[split]
  json_path = manual_dir / "datafiles" / f"{prefix}.json"
  if json_path.is_file():
    data = json.loads(json_path.read_text(encoding="utf-8"))["data"]
    return {pathlib.PurePath(item["wav"]).stem for item in data}
  csv_path = common.first_existing(manual_dir / d / f"{prefix}_meta.csv" for d in ("datasplit", "meta"))
  if csv_path is None:
    raise ManualDirError(f"{NAME}: no split list for {split!r} under {manual_dir}; expected layout: {LAYOUT}")
  with open(csv_path, newline="", encoding="utf-8") as f:
    return {pathlib.PurePath(row[0].strip()).stem for row in csv.reader(f) if row and row[0].strip()}


def label_of(path: pathlib.Path) -> str:
  return path.stem.rsplit("_", 1)[-1]


def scan(manual_dir, split: str) -> list[dict]:
  common.check_split(NAME, split, SPLITS)
  manual_dir = common.require_dir(NAME, pathlib.Path(manual_dir), LAYOUT)
  audio_dir = common.require_dir(NAME, manual_dir / "audio_16k", LAYOUT)
  keys = split_keys(manual_dir, split)
  records = [make_record(id=wav.stem, source=f"{NAME}/{split}", task=TASK, audio=str(wav),
                         text=label_of(wav), lang="en", text_lang="en")
             for wav in common.audio_files(audio_dir)
             if wav.stem in keys or wav.stem.split("_", 1)[0] in keys]
  return common.non_empty(NAME, records, audio_dir, LAYOUT)
