"""Readers of manual-download corpora in their published on-disk layouts.

Each module has NAME, TASK, SPLITS, LAYOUT and `scan(manual_dir, split) -> list[record]` (sorted,
deterministic; `audio` is a file path). A missing directory or file raises `ManualDirError` with one
line naming the dataset, the path and the expected layout.
"""

from qwen_audio_jax.data.corpora import aishell1, clotho, cochlscene, librispeech, meld, vocalsound

CORPORA = {m.NAME: m for m in (librispeech, aishell1, clotho, cochlscene, vocalsound, meld)}

__all__ = ["CORPORA"]
