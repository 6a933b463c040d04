"""MELD speech emotion recognition: the released csvs + audio extracted from the released mp4 clips.

  <manual_dir>/{train,dev,test}_sent_emo.csv     (MELD.Raw; columns Utterance, Speaker, Emotion,
                                                   Sentiment, Dialogue_ID, Utterance_ID, ...)
  <manual_dir>/audio/{train,dev,test}/dia<Dialogue_ID>_utt<Utterance_ID>.wav   (or .flac)
MELD ships video only (train_splits/, dev_splits_complete/, output_repeated_splits_test/ with .mp4);
extract mono 16 kHz audio once, e.g. `ffmpeg -i dia0_utt0.mp4 -ac 1 -ar 16000 dia0_utt0.wav`, into
audio/<split>/. Audio files found in the release folders themselves are used too. The answer is the
Emotion column (neutral, joy, surprise, anger, sadness, disgust, fear), lower-cased. Rows whose clip
is missing (the release lacks a few) are skipped with one warning giving their number.
"""

from __future__ import annotations

import csv
import pathlib
import warnings

from qwen_audio_jax.data.corpora import common
from qwen_audio_jax.data.records import make_record

NAME = "meld"
TASK = "ser"
SPLITS = ("train", "dev", "test")
_RELEASE_DIRS = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}
LAYOUT = "<manual_dir>/<split>_sent_emo.csv + <manual_dir>/audio/<split>/dia<D>_utt<U>.wav"


def _find_clip(manual_dir: pathlib.Path, split: str, stem: str) -> pathlib.Path | None:
  folders = (manual_dir / "audio" / split, manual_dir / _RELEASE_DIRS[split])
  return common.first_existing(folder / f"{stem}{ext}" for folder in folders
                               for ext in common.AUDIO_SUFFIXES)


def scan(manual_dir, split: str) -> list[dict]:
  common.check_split(NAME, split, SPLITS)
  manual_dir = common.require_dir(NAME, pathlib.Path(manual_dir), LAYOUT)
  csv_path = common.require_file(NAME, manual_dir / f"{split}_sent_emo.csv", LAYOUT)
  records, missing = [], []
  with open(csv_path, newline="", encoding="utf-8", errors="replace") as f:
    for row in csv.DictReader(f):
      stem = f"dia{row['Dialogue_ID'].strip()}_utt{row['Utterance_ID'].strip()}"
      clip = _find_clip(manual_dir, split, stem)
      if clip is None:
        missing.append(stem)
      else:
        records.append(make_record(id=stem, source=f"{NAME}/{split}", task=TASK, audio=str(clip),
                                   text=row["Emotion"].strip().lower(), lang="en", text_lang="en"))
  if missing and records:
    warnings.warn(f"{NAME}/{split}: {len(missing)} csv rows have no audio clip (first: {missing[0]}); "
                  "skipped", stacklevel=2)
  return common.non_empty(NAME, records, manual_dir / "audio" / split, LAYOUT)
