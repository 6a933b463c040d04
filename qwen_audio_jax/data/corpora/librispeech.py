"""LibriSpeech (OpenSLR 12) from its published layout: <split>/SPEAKER/CHAPTER/*.flac + *.trans.txt.

`manual_dir` is the folder holding `LibriSpeech/` (as extracted from the tarballs) or the split folders
themselves. Transcripts are upper case without punctuation in the release; they are lower-cased here
(Qwen-Audio's WER lower-cases both sides anyway, and lower case tokenises into fewer BPE pieces).
"""

from __future__ import annotations

import pathlib

from qwen_audio_jax.data.corpora import common
from qwen_audio_jax.data.records import make_record

NAME = "librispeech"
TASK = "asr"
SPLITS = ("train-clean-100", "train-clean-360", "train-other-500", "dev-clean", "dev-other",
          "test-clean", "test-other")
LAYOUT = "<manual_dir>/LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac + <speaker>-<chapter>.trans.txt"


def split_dir(manual_dir, split: str) -> pathlib.Path:
  manual_dir = pathlib.Path(manual_dir)
  found = common.first_existing([manual_dir / "LibriSpeech" / split, manual_dir / split])
  return common.require_dir(NAME, found or manual_dir / "LibriSpeech" / split, LAYOUT)


def scan(manual_dir, split: str) -> list[dict]:
  """One ASR record per utterance listed in a chapter's .trans.txt (audio = path of its .flac)."""
  common.check_split(NAME, split, SPLITS)
  root = split_dir(manual_dir, split)
  records = []
  for trans in sorted(root.glob("*/*/*.trans.txt")):
    for line in trans.read_text(encoding="utf-8").splitlines():
      if not line.strip():
        continue
      utt_id, _, text = line.strip().partition(" ")
      audio = common.first_existing(trans.parent / f"{utt_id}{ext}" for ext in (".flac", ".wav"))
      if audio is None:
        raise common.ManualDirError(f"{NAME}: {trans} lists {utt_id} but {trans.parent}/{utt_id}.flac "
                                    "is missing")
      records.append(make_record(id=utt_id, source=f"{NAME}/{split}", task=TASK, audio=str(audio),
                                 text=text.lower(), lang="en"))
  return common.non_empty(NAME, records, root, LAYOUT)
