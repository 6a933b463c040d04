"""AISHELL-1 (OpenSLR 33) from its published layout, speaker tarballs extracted.

  <manual_dir>/[data_aishell/]wav/{train,dev,test}/<speaker>/<utt>.wav
  <manual_dir>/[data_aishell/]transcript/aishell_transcript_v0.8.txt   ("<utt> 词 词 词" per line)
The transcript is word-segmented with spaces; the spaces are removed (Chinese text, CER on characters).
Wavs without a transcript line (a few hundred in the release) are skipped, as in the Kaldi recipe.
"""

from __future__ import annotations

import pathlib

from qwen_audio_jax.data.corpora import common
from qwen_audio_jax.data.records import make_record

NAME = "aishell1"
TASK = "asr"
SPLITS = ("train", "dev", "test")
TRANSCRIPT = "transcript/aishell_transcript_v0.8.txt"
LAYOUT = "<manual_dir>/data_aishell/wav/{train,dev,test}/<speaker>/<utt>.wav + data_aishell/" + TRANSCRIPT


def root_dir(manual_dir) -> pathlib.Path:
  """`manual_dir/data_aishell` when present (the tarball's top folder), else `manual_dir` itself."""
  manual_dir = common.require_dir(NAME, pathlib.Path(manual_dir), LAYOUT)
  return manual_dir / "data_aishell" if (manual_dir / "data_aishell").is_dir() else manual_dir


def read_transcripts(path: pathlib.Path) -> dict[str, str]:
  transcripts = {}
  for line in path.read_text(encoding="utf-8").splitlines():
    utt_id, _, text = line.strip().partition(" ")
    if utt_id:
      transcripts[utt_id] = "".join(text.split())
  return transcripts


def scan(manual_dir, split: str) -> list[dict]:
  common.check_split(NAME, split, SPLITS)
  root = root_dir(manual_dir)
  wav_dir = common.require_dir(NAME, root / "wav" / split, LAYOUT)
  transcripts = read_transcripts(common.require_file(NAME, root / TRANSCRIPT, LAYOUT))
  records = [make_record(id=wav.stem, source=f"{NAME}/{split}", task=TASK, audio=str(wav),
                         text=transcripts[wav.stem], lang="zh")
             for wav in common.audio_files(wav_dir, "*/*") if wav.stem in transcripts]
  return common.non_empty(NAME, records, wav_dir, LAYOUT)
