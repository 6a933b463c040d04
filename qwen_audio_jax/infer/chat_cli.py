"""`infer --chat`: a multi-turn conversation, from a JSON file or typed in the terminal.

Typed turns (readline editing and history): text, with audio given inline as `<audio>PATH</audio>` or as
a word `@PATH` (PATH must exist). Commands: `/reset` starts over, `/save FILE` writes the conversation
as JSON (the format --conversation reads), `/exit` (or Ctrl-D) quits.
A conversation file is a list of {"role": "system"|"user"|"assistant", "content": str | [{"audio": PATH} |
{"text": str}, ...]} ending with a user message; the reply is printed (with --json, as a JSON object).
"""

from __future__ import annotations

import json
import os
import re
import sys

_INLINE_AUDIO = re.compile(r"<audio>(.*?)</audio>|(?:^|\s)@(\S+)")


def parse_turn(line: str) -> list[dict]:
  """A typed line -> content items; audio paths are checked to exist."""
  items, pos = [], 0
  for match in _INLINE_AUDIO.finditer(line):
    text = line[pos:match.start()].strip()
    if text:
      items.append({"text": text})
    path = match.group(1) or match.group(2)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path}: no such audio file")
    items.append({"audio": path})
    pos = match.end()
  rest = line[pos:].strip()
  if rest:
    items.append({"text": rest})
  return items


def load_conversation(path: str) -> list[dict]:
  with open(path, encoding="utf-8") as f:
    messages = json.load(f)
  if not isinstance(messages, list):
    raise ValueError(f"{path}: a conversation is a JSON list of messages")
  return messages


def _system(args) -> list[dict]:
  return [{"role": "system", "content": args.system}] if args.system else []


def run(pipe, args, options: dict) -> int:
  if args.conversation:
    messages = _system(args) + load_conversation(args.conversation)
    result = pipe.chat(messages, **options)
    print(json.dumps(result.as_json(), ensure_ascii=False) if args.json else result.text, flush=True)
    return 0
  try:
    import readline  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    pass
  messages = _system(args)
  print("chat: type a message (audio: <audio>PATH</audio> or @PATH); /reset, /save FILE, /exit", file=sys.stderr)
  while True:
    try:
      line = input("you> ").strip()
    except EOFError:
      print(file=sys.stderr)
      return 0
    if not line:
      continue
    if line == "/exit":
      return 0
    if line == "/reset":
      messages = _system(args)
      continue
    if line.startswith("/save "):
      with open(line[6:].strip(), "w", encoding="utf-8") as f:
        json.dump(messages, f, ensure_ascii=False, indent=1)
      continue
    try:
      items = parse_turn(line)
      reply = pipe.chat(messages + [{"role": "user", "content": items}], **options)
    except (FileNotFoundError, ValueError) as e:
      print(f"error: {e}", file=sys.stderr)
      continue
    messages += [{"role": "user", "content": items}, {"role": "assistant", "content": reply.text}]
    print(f"assistant> {reply.text}", flush=True)
