"""The one record format every source yields, before decoding and tokenisation.

A record is a plain dict of strings plus `audio` (encoded file bytes or a path), so it pickles cheaply
into grain workers and stores as-is in TFDS array_record files (without tensorflow):

  id          unique within its source, e.g. "103-1240-0000"
  source      dataset/subset the record came from, e.g. "librispeech/dev-clean" (metrics, eval `source`)
  task        one of TASKS (lower case): asr, s2tt, srwt, aac, asc, ser, aqa, vsc, mna
  audio       bytes of an audio file (wav/flac/...) or a path; decoded by `audio.load_audio`
  lang        language of the audio ("en", "zh", ...; "unknown" for non-speech)
  text_lang   language of the answer text
  text        the answer (transcript, label, caption, answer)
  question    AQA question ("" for other tasks)
  prompt      a ready prompt string (eval jsonl of Qwen-Audio); "" means "build it from task fields"
  references  alternative references joined by "\\n" (e.g. Clotho's 5 captions); "" if none
"""

from __future__ import annotations

import os
from typing import Any, Mapping

TASKS = ("asr", "s2tt", "srwt", "aac", "asc", "ser", "aqa", "vsc", "mna")
TEXT_FIELDS = ("id", "source", "task", "lang", "text_lang", "text", "question", "prompt", "references")
FIELDS = TEXT_FIELDS + ("audio",)


class RecordError(ValueError):
  """A record that does not follow the format above (one line: source, id, cause)."""


class ManualDirError(FileNotFoundError):
  """A manual-download dataset directory (or one of its files) is missing."""


def make_record(*, id: str, source: str, task: str, audio: Any, text: str = "", lang: str = "en",
                text_lang: str | None = None, question: str = "", prompt: str = "",
                references: str | list[str] = "") -> dict[str, Any]:
  """Builds a checked record; `text_lang` defaults to `lang` (or "en" for non-speech audio)."""
  if text_lang is None:
    text_lang = "en" if lang == "unknown" else lang
  if not isinstance(references, str):
    references = "\n".join(references)
  record = dict(id=str(id), source=str(source), task=str(task), audio=audio, lang=str(lang),
                text_lang=str(text_lang), text=str(text), question=str(question), prompt=str(prompt),
                references=references)
  return check_record(record)


def check_record(record: Mapping[str, Any]) -> dict[str, Any]:
  """Returns `record` with str text fields (bytes from TFDS are decoded); raises RecordError."""
  out = {}
  for key in TEXT_FIELDS:
    value = record.get(key, "")
    out[key] = value.decode("utf-8") if isinstance(value, bytes) else str(value)
  where = f"{out['source'] or '<no source>'}:{out['id'] or '<no id>'}"
  if out["task"] not in TASKS and not out["prompt"]:
    raise RecordError(f"{where}: unknown task {out['task']!r} (known: {', '.join(TASKS)}) and no prompt")
  audio = record.get("audio")
  if isinstance(audio, os.PathLike):
    audio = os.fspath(audio)
  if not isinstance(audio, (str, bytes)) or not audio:
    raise RecordError(f"{where}: 'audio' must be a non-empty path or file bytes, got {type(audio).__name__}")
  out["audio"] = audio
  return out


def describe(record: Mapping[str, Any]) -> str:
  """Short name of a record for messages: "source:id" plus the path when the audio is a path."""
  name = f"{record.get('source', '?')}:{record.get('id', '?')}"
  audio = record.get("audio")
  return f"{name} ({audio})" if isinstance(audio, str) else name
