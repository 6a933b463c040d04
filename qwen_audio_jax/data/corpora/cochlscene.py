"""CochlScene acoustic scene classification from its published layout: {Train,Val,Test}/<Label>/*.wav.

The answer is the folder name (Bus, Cafe, Car, CrowdedIndoor, Elevator, Kitchen, Park, ResidentialArea,
Restaurant, Restroom, Street, Subway, SubwayStation). Split names are accepted as train/val/test too.
"""

from __future__ import annotations

import pathlib

from qwen_audio_jax.data.corpora import common
from qwen_audio_jax.data.records import make_record

NAME = "cochlscene"
TASK = "asc"
SPLITS = ("train", "val", "test")
LAYOUT = "<manual_dir>/{Train,Val,Test}/<Label>/*.wav"


def scan(manual_dir, split: str) -> list[dict]:
  split = split.lower()
  common.check_split(NAME, split, SPLITS)
  split_dir = common.require_dir(NAME, pathlib.Path(manual_dir) / split.capitalize(), LAYOUT)
  records = [make_record(id=f"{wav.parent.name}/{wav.stem}", source=f"{NAME}/{split}", task=TASK,
                         audio=str(wav), text=wav.parent.name, lang="unknown", text_lang="en")
             for wav in common.audio_files(split_dir, "*/*")]
  return common.non_empty(NAME, records, split_dir, LAYOUT)
