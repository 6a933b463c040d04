"""Conversation jsonl for chat SFT → records holding canonical `messages` (see prompts/conversation.py).

Each non-empty line is one conversation, in either shape (detected per line):
* ChatML text, as Qwen-Audio's `assets/sft_sample.txt`: the rendered conversation on one line, newlines
  written as the two characters `\\n` (a JSON string holding the text is accepted too), e.g.
    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\nAudio 1: <audio>a.flac</audio>\\n
    what does the person say?<|im_end|>\\n<|im_start|>assistant\\nThe person says ...<|im_end|>
  A missing final `<|im_end|>` is tolerated (the sample's last lines lack it).
* A JSON object (ms-swift / LLaMA-Factory / Qwen finetune.py):
    {"messages": [{"role": "user", "content": "<audio>What is this sound?"},
                  {"role": "assistant", "content": "A dog barking."}],
     "audios": ["dog.wav"], "system": "optional system prompt", "id": "optional"}
  `conversations` instead of `messages`, `from`/`value` instead of `role`/`content` and the roles
  human/gpt are accepted; content may also be a list of {"type": "text"/"audio", ...} elements.
Audios: `<audio>PATH</audio>` in the text (an `Audio k:` label before it and one newline after it are part of
the label and dropped), or bare `<audio>` placeholders filled from `audios` in order. A conversation without
audio is a text-only example. Relative paths are resolved against the jsonl's folder. Bad lines raise
`ManifestError` naming the file, the line and the cause.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
from typing import Any

from qwen_audio_jax.data.manifests import ManifestError
from qwen_audio_jax.prompts.conversation import LOSS_ON, check_messages, conversation_audios

_TURN = re.compile(r"<\|im_start\|>(system|user|assistant)\n(.*?)(?:<\|im_end\|>|(?=<\|im_start\|>)|\Z)", re.DOTALL)
_CLOSED_AUDIO = re.compile(r"(?:Audio \d+:\s?)?<audio>(.*?)</audio>\n?", re.DOTALL)
_ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def _resolve(path: str, folder: pathlib.Path) -> str:
  return path if "://" in path or os.path.isabs(path) else str(folder / path)


def _elements(text: str, pending: list[str], folder: pathlib.Path, where: str) -> list[dict[str, str]]:
  """Text with audio tags / placeholders → [{"type": "text"|"audio", ...}]; placeholders pop `pending`."""
  out = []

  def add_text(chunk: str):
    parts = chunk.split("<audio>")
    for k, part in enumerate(parts):
      if k:
        if not pending:
          raise ManifestError(f"{where}: more <audio> placeholders than entries in 'audios'")
        out.append({"type": "audio", "audio": _resolve(pending.pop(0), folder)})
      if part:
        out.append({"type": "text", "text": part})

  pos = 0
  for match in _CLOSED_AUDIO.finditer(text):
    add_text(text[pos:match.start()])
    out.append({"type": "audio", "audio": _resolve(match.group(1), folder)})
    pos = match.end()
  add_text(text[pos:])
  return out


def parse_chatml_line(text: str, folder: pathlib.Path, where: str) -> list[dict[str, Any]]:
  """One sft_sample.txt-style line → messages."""
  text = text.replace("\\n", "\n")
  turns = _TURN.findall(text)
  if not turns:
    raise ManifestError(f"{where}: no <|im_start|>ROLE\\n...<|im_end|> turn found")
  return [{"role": role, "content": _elements(body, [], folder, where)} for role, body in turns]


def parse_messages_object(obj: dict, folder: pathlib.Path, where: str) -> list[dict[str, Any]]:
  """One ms-swift / LLaMA-Factory / finetune.py object → messages."""
  turns = obj.get("messages", obj.get("conversations"))
  if not isinstance(turns, list) or not turns:
    raise ManifestError(f"{where}: expected a non-empty 'messages' (or 'conversations') list")
  audios = obj.get("audios", obj.get("audio", []))
  if not isinstance(audios, (str, list)):
    raise ManifestError(f"{where}: 'audios' must be a path or a list of paths, got {json.dumps(audios)[:40]}")
  pending = [audios] if isinstance(audios, str) else [str(a) for a in audios]
  messages = []
  if obj.get("system"):
    messages.append({"role": "system", "content": [{"type": "text", "text": str(obj["system"])}]})
  for k, turn in enumerate(turns):
    if not isinstance(turn, dict):
      raise ManifestError(f"{where}: turn {k} is not an object")
    role = _ROLE_ALIASES.get(str(turn.get("role", turn.get("from", ""))).lower())
    if role is None:
      raise ManifestError(f"{where}: turn {k} has role {turn.get('role', turn.get('from'))!r}; "
                          f"expected one of {sorted(_ROLE_ALIASES)}")
    content = turn.get("content", turn.get("value"))
    if isinstance(content, str):
      elements = _elements(content, pending, folder, where)
    elif isinstance(content, list):
      elements = []
      for e in content:
        if isinstance(e, dict) and (e.get("type") == "audio" or "audio" in e or "audio_url" in e):
          path = e.get("audio", e.get("audio_url"))
          elements.append({"type": "audio", "audio": _resolve(str(path), folder)} if path else
                          _elements("<audio>", pending, folder, where)[0])
        elif isinstance(e, dict) and "text" in e:
          elements += _elements(str(e["text"]), pending, folder, where)
        else:
          raise ManifestError(f"{where}: turn {k} has a content element that is neither text nor audio: {e!r}")
    else:
      raise ManifestError(f"{where}: turn {k} has no 'content' (or 'value') string or list")
    messages.append({"role": role, "content": elements})
  if pending:
    raise ManifestError(f"{where}: {len(pending)} entr(y/ies) of 'audios' left over (fewer <audio> placeholders)")
  return messages


def read_conversations_jsonl(path, loss_on: str = "assistant") -> list[dict[str, Any]]:
  """Records {"id", "source", "messages", "loss_on"} of a conversations jsonl (see module docstring)."""
  path = pathlib.Path(path)
  if loss_on not in LOSS_ON:
    raise ManifestError(f"{path}: loss_on={loss_on!r}; use one of {LOSS_ON}")
  if not path.is_file():
    raise ManifestError(f"{path}: conversations file not found")
  records = []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      line = line.strip()
      if not line:
        continue
      where, obj = f"{path}:{number}", line
      if line.startswith(("{", '"')):
        try:
          obj = json.loads(line)
        except json.JSONDecodeError as e:
          raise ManifestError(f"{where}: invalid JSON ({e.msg})") from None
      if isinstance(obj, dict):
        messages = parse_messages_object(obj, path.parent, where)
      elif isinstance(obj, str) and obj.lstrip().startswith("<|im_start|>"):
        messages = parse_chatml_line(obj, path.parent, where)
      else:
        raise ManifestError(f"{where}: neither a JSON object with 'messages' nor a ChatML line (<|im_start|>...)")
      try:
        check_messages(messages, where)
      except ValueError as e:
        raise ManifestError(str(e)) from None
      records.append({"id": str(obj.get("id", number)) if isinstance(obj, dict) else str(number),
                      "source": path.stem, "messages": messages, "loss_on": loss_on,
                      "n_audios": len(conversation_audios(messages))})
  return records
