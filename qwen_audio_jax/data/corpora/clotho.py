"""Clotho v2 audio captioning from its published layout.

  <manual_dir>/clotho_audio_{split}/<file_name>.wav
  <manual_dir>/clotho_captions_{split}.csv   (columns: file_name, caption_1 ... caption_5)
Splits: development, validation, evaluation. One AAC record per (clip, caption) so training sees every
caption; `references` carries all captions of the clip for evaluation.
"""

from __future__ import annotations

import csv
import pathlib

from qwen_audio_jax.data.corpora import common
from qwen_audio_jax.data.records import make_record

NAME = "clotho"
TASK = "aac"
SPLITS = ("development", "validation", "evaluation")
LAYOUT = "<manual_dir>/clotho_audio_<split>/*.wav + <manual_dir>/clotho_captions_<split>.csv"


def scan(manual_dir, split: str) -> list[dict]:
  common.check_split(NAME, split, SPLITS)
  manual_dir = common.require_dir(NAME, pathlib.Path(manual_dir), LAYOUT)
  audio_dir = common.require_dir(NAME, manual_dir / f"clotho_audio_{split}", LAYOUT)
  captions_csv = common.require_file(NAME, manual_dir / f"clotho_captions_{split}.csv", LAYOUT)
  records = []
  with open(captions_csv, newline="", encoding="utf-8") as f:
    for row in csv.DictReader(f):
      captions = [row[k].strip() for k in sorted(row) if k.startswith("caption_") and row[k].strip()]
      audio = audio_dir / row["file_name"]
      if not audio.is_file():
        raise common.ManualDirError(f"{NAME}: {captions_csv} lists {row['file_name']} but {audio} "
                                    "is missing")
      for k, caption in enumerate(captions):
        records.append(make_record(id=f"{row['file_name']}#{k + 1}", source=f"{NAME}/{split}",
                                   task=TASK, audio=str(audio), text=caption, lang="unknown",
                                   text_lang="en", references=captions))
  return common.non_empty(NAME, records, audio_dir, LAYOUT)
