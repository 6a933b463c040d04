"""jsonl manifests: Qwen-Audio's eval format and a general task format, both to records.

Eval format (one object per line, as in Qwen-Audio's `eval_audio/*.jsonl`):
  {"audio": "path.wav", "prompt": "<|startoftranscript|><|en|>...", "gt": "reference", "source": "..."}
  The prompt is the text after `<audio>path</audio>`; the task is read off its tags (`infer_task`).
General format (training or eval; built into a prompt by the prompt builders from its fields):
  {"audio": "path.flac", "task": "asr", "lang": "en", "text": "...",            # required
   "text_lang": "en", "question": "...", "id": "...", "source": "..."}          # optional
  `answer` is accepted as an alias of `text` (AQA / classification manifests).
Relative audio paths are resolved against the manifest's folder. A malformed line raises
`ManifestError` naming the file, the line number and the cause.

`read_manifest` detects a file's kind from the fields of its first record (`MANIFEST_KINDS`, first
match wins); adding a kind is one row there.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Callable, NamedTuple

from qwen_audio_jax.data.records import RecordError, make_record

# Output-instruction / task tags → task name, checked in this order (first match wins).
_TASK_TAGS = (
    ("<|timestamps|>", "srwt"), ("<|translate|>", "s2tt"), ("<|transcribe|>", "asr"),
    ("<|question|>", "aqa"), ("<|caption", "aac"), ("<|scene|>", "asc"),
    ("<|emotion_recognition|>", "ser"), ("<|vocal_classification|>", "vsc"),
    ("<|note_analysis|>", "mna"),
)
_LANG_TAG_PREFIXES = ("<|startoftranscript|>", "<|startofanalysis|>")


class ManifestError(ValueError):
  """A jsonl manifest line that cannot be turned into a record."""


def infer_task(prompt: str) -> str:
  """Task name of a hierarchical-tag prompt ("" when no known tag is present)."""
  for tag, task in _TASK_TAGS:
    if tag in prompt:
      return task
  return ""


def _audio_lang(prompt: str) -> str:
  """The audio-language tag right after the transcription tag, e.g. 'en' ("" if absent)."""
  for prefix in _LANG_TAG_PREFIXES:
    if prompt.startswith(prefix):
      rest = prompt[len(prefix):]
      if rest.startswith("<|") and "|>" in rest:
        return rest[2:rest.index("|>")]
  return ""


def _resolve(audio: str, folder: pathlib.Path) -> str:
  if "://" in audio or os.path.isabs(audio):
    return audio
  return str(folder / audio)


def _lines(path: pathlib.Path):
  if not path.is_file():
    raise ManifestError(f"{path}: manifest file not found")
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      if line.strip():
        try:
          yield number, json.loads(line)
        except json.JSONDecodeError as e:
          raise ManifestError(f"{path}:{number}: invalid JSON ({e.msg})") from None


_TEXT_FIELDS = ("text", "answer", "gt", "question", "id", "source", "text_lang")  # numbers read as text


def _require(obj, keys, where: str) -> None:
  """Required fields present; path/tag fields strings, text fields strings or numbers (never a list,
  object, null or boolean turned silently into text)."""
  if not isinstance(obj, dict):
    raise ManifestError(f"{where}: expected a JSON object, got {type(obj).__name__}")
  missing = [k for k in keys if k not in obj]
  if missing:
    raise ManifestError(f"{where}: missing field(s) {missing}")
  for key in ("audio", "task", "lang", "prompt") + _TEXT_FIELDS:
    value = obj.get(key)
    if key not in obj or isinstance(value, str) or (
        key in _TEXT_FIELDS and isinstance(value, (int, float)) and not isinstance(value, bool)):
      continue
    if key == "text_lang" and value is None:
      continue
    kind = "string or number" if key in _TEXT_FIELDS else "string"
    raise ManifestError(f"{where}: field {key!r} must be a {kind}, got {json.dumps(value)[:40]}")


def read_eval_jsonl(path) -> list[dict]:
  """Records of a Qwen-Audio eval jsonl ({"audio", "prompt", "gt", "source"})."""
  path = pathlib.Path(path)
  records = []
  for number, obj in _lines(path):
    where = f"{path}:{number}"
    _require(obj, ("audio", "prompt", "gt"), where)
    prompt = str(obj["prompt"])
    lang = _audio_lang(prompt) or "unknown"
    try:
      records.append(make_record(
          id=str(obj.get("id", number)), source=str(obj.get("source", path.stem)),
          task=infer_task(prompt), audio=_resolve(str(obj["audio"]), path.parent), text=str(obj["gt"]),
          lang=lang, prompt=prompt))
    except RecordError as e:
      raise ManifestError(f"{where}: {e}") from None
  return records


def read_task_jsonl(path) -> list[dict]:
  """Records of a general task jsonl (see module docstring)."""
  path = pathlib.Path(path)
  records = []
  for number, obj in _lines(path):
    where = f"{path}:{number}"
    _require(obj, ("audio", "task", "lang"), where)
    if "text" not in obj and "answer" not in obj:
      raise ManifestError(f"{where}: missing field 'text' (or its alias 'answer')")
    try:
      records.append(make_record(
          id=str(obj.get("id", number)), source=str(obj.get("source", path.stem)),
          task=str(obj["task"]).lower(), audio=_resolve(str(obj["audio"]), path.parent),
          text=str(obj.get("text", obj.get("answer"))), lang=str(obj["lang"]),
          text_lang=obj.get("text_lang"), question=str(obj.get("question", ""))))
    except RecordError as e:
      raise ManifestError(f"{where}: {e}") from None
  return records


def write_eval_jsonl(path, rows) -> None:
  """Writes dicts with at least {"audio", "prompt", "gt", "source"} as jsonl (UTF-8, unescaped)."""
  with open(path, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + "\n")


class ManifestKind(NamedTuple):
  name: str
  fields: frozenset[str]  # a record with all of these fields is of this kind
  read: Callable[..., list[dict]]


def read_conversations(path) -> list[dict]:
  """Chat SFT conversations (data/conversations.py; imported here lazily: it builds on this module)."""
  from qwen_audio_jax.data.conversations import read_conversations_jsonl  # pylint: disable=import-outside-toplevel
  return read_conversations_jsonl(path)


MANIFEST_KINDS: list[ManifestKind] = [
    ManifestKind("eval", frozenset({"audio", "prompt", "gt"}), read_eval_jsonl),
    ManifestKind("task", frozenset({"audio", "task"}), read_task_jsonl),
    ManifestKind("conversations", frozenset({"messages"}), read_conversations),
    ManifestKind("conversations", frozenset({"conversations"}), read_conversations),
]
CHATML_LINE = ManifestKind("conversations", frozenset(), read_conversations)  # sft_sample.txt-style lines


def manifest_kind(path) -> ManifestKind:
  """The kind of a jsonl manifest, from the fields of its first record."""
  path = pathlib.Path(path)
  if path.is_file():
    with open(path, encoding="utf-8") as f:
      first = next((line for line in f if line.strip()), "")
    if first.lstrip().startswith("<|im_start|>"):
      return CHATML_LINE
  for number, obj in _lines(path):
    if not isinstance(obj, dict):
      raise ManifestError(f"{path}:{number}: expected a JSON object, got {type(obj).__name__}")
    for kind in MANIFEST_KINDS:
      if kind.fields <= set(obj):
        return kind
    wanted = "; ".join(f"{k.name}: {sorted(k.fields)}" for k in MANIFEST_KINDS)
    raise ManifestError(f"{path}:{number}: fields {sorted(obj)} match no manifest kind ({wanted})")
  raise ManifestError(f"{path}: manifest has no records")


def read_manifest(path) -> list[dict]:
  """Records of a jsonl manifest of any kind in `MANIFEST_KINDS` (detected per file)."""
  return manifest_kind(path).read(path)
