"""User requests → engine rows: audio loading under the long-audio policy, then the family's prompt.

Three ways to ask (the family comes from the checkpoint):
* task prompts: Qwen-Audio's hierarchical tags (spec §5) or Qwen2-Audio's natural-language prompts,
  built by the same `data.ExampleEncoder.prompt_ids` as training and evaluation; one row per ≤30 s
  window, so policy "chunk" decodes every window and `results.stitch` joins them;
* raw prompts: the model's own prompt text (`<audio>PATH</audio>` tags for Qwen-Audio, `<|AUDIO|>`
  placeholders for Qwen2-Audio), audio expanded as the reference processors do;
* chat: Qwen-Audio-Chat ChatML (`Audio k:` labels, history) or the Qwen2-Audio chat template.
Raw prompts and chat take ≤30 s per audio (policy "error" or "truncate"); "chunk" is for task prompts.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from qwen_audio_jax.audio import AudioError, load_audio, prepare_clip
from qwen_audio_jax.audio.load import check_waveform, resample, source_name
from qwen_audio_jax.audio.long_audio import ClipInfo
from qwen_audio_jax.data.examples import ExampleEncoder
from qwen_audio_jax.infer.engine import Prompt
from qwen_audio_jax.prompts import (DEFAULT_SYSTEM, TASKS, PromptError, expand_audio, list_audio_paths,
                                    make_chat_context, make_qwen2_audio_context, qwen2_task_prompt, task_fields)
from qwen_audio_jax.prompts.qwen2_tasks import AUDIO_SLOT

AudioInput = Any  # a path, or (array, sample_rate)


@dataclasses.dataclass
class Row:
  """One engine row and where it came from."""

  prompt: Prompt
  input_index: int  # which request it belongs to
  window: int  # window of a chunked clip (0 otherwise)
  clip: ClipInfo | None  # the clip this row's audio came from (task prompts), else the first audio's
  prompt_text: str
  forced_prefix: str = ""  # text the prompt already forces at the start of the answer (SRWT "<|0.00|>")


def load_clip(audio: AudioInput, policy: str, family: str, overlap_s: float = 0.0):
  """(segments, ClipInfo) of one audio input; arrays must come as (array, sample_rate)."""
  if isinstance(audio, tuple):
    wave, rate = audio
    samples = resample(check_waveform(np.asarray(wave, np.float32), "<array>"), int(rate))
    name = "<array>"
  else:
    samples, name = load_audio(audio), source_name(audio)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # truncation is reported in every result instead
    segments, info = prepare_clip(samples, policy=policy, source=name, family=family, overlap_s=overlap_s)
  if family != "whisper" and any(w.audio_tokens < 1 for w in info.windows):
    raise AudioError(f"{name}: {info.duration_s * 1000:.0f} ms of audio is too short for one audio token "
                     "(at least 80 ms are needed)")
  return segments, info


def _prompt(ids, segments, info: ClipInfo | None, windows=None) -> Prompt:
  windows = info.windows if windows is None else windows
  return Prompt(ids=np.asarray(ids, np.int32), waveforms=[np.asarray(s, np.float32) for s in segments],
                encoder_frames=[w.encoder_frames for w in windows],
                audio_seconds=sum(w.duration_s for w in windows))


def task_fields_for(task: str, language: str = "en", target_language: str | None = None,
                    question: str | None = None) -> dict[str, str]:
  """The fields a task needs from the request's options, with one-line errors for missing ones."""
  if task not in TASKS:
    raise PromptError(f"task {task!r} is unknown; choose one of {sorted(TASKS)}")
  values = {"lang": language, "src": language, "tgt": target_language, "question": question}
  fields = {}
  for name in task_fields(task):
    if not values.get(name):
      flag = {"tgt": "target_language", "question": "question"}.get(name, "language")
      raise PromptError(f"task {task!r} needs --{flag}")
    fields[name] = values[name]
  return fields


def task_rows(encoder: ExampleEncoder, audio: AudioInput, index: int, task: str, fields: Mapping[str, str],
              policy: str, overlap_s: float = 0.0) -> list[Row]:
  """One row per ≤30 s window of `audio`, each with the task's prompt."""
  segments, info = load_clip(audio, policy, encoder.family, overlap_s)
  record = {"task": task, "lang": fields.get("lang", fields.get("src", "en")), "text_lang": fields.get("tgt", "en"),
            "question": fields.get("question", ""), "prompt": "", "source": "request", "id": str(index)}
  if encoder.family == "qwen2-audio":
    record["prompt"] = AUDIO_SLOT + qwen2_task_prompt(task, **fields)
  text = encoder.prompt_text(record)
  forced = "<|0.00|>" if encoder.family == "qwen-audio" and text.endswith("<|0.00|>") else ""
  rows = []
  for k, (segment, window) in enumerate(zip(segments, info.windows)):
    ids = encoder.prompt_ids(record, [window.audio_tokens])
    rows.append(Row(_prompt(ids, [segment], info, [window]), index, k, info, text, forced))
  return rows


def raw_rows(encoder: ExampleEncoder, text: str, audios: Sequence[AudioInput], index: int, policy: str) -> Row:
  """The model's own prompt text; the i-th audio slot gets the i-th audio.

  Qwen-Audio: `<audio>PATH</audio>` tags (their PATHs are loaded unless `audios` are given);
  Qwen2-Audio: `<|AUDIO|>` placeholders (prepended, wrapped in bos/eos, when the text has none).
  """
  if not text.strip():
    raise PromptError("the prompt is empty")
  _no_chunk(policy, "raw prompts")
  if encoder.family == "qwen-audio":
    paths = list_audio_paths(text)
    if audios and len(audios) != len(paths):
      raise PromptError(f"the prompt has {len(paths)} <audio>…</audio> slot(s) but {len(audios)} audio input(s)")
    sources = list(audios) if audios else paths
  else:
    count = text.count("<|AUDIO|>")
    if count == 0 and audios:
      text, count = AUDIO_SLOT * len(audios) + text, len(audios)
    if count != len(audios):
      raise PromptError(f"the prompt has {count} <|AUDIO|> slot(s) but {len(audios)} audio input(s)")
    sources = list(audios)
  loaded = [load_clip(source, policy, encoder.family) for source in sources]
  windows = [info.windows[0] for _, info in loaded]
  tok = encoder.tokenizer
  ids = expand_audio(tok.encode(text, allowed_special="all"), [w.audio_tokens for w in windows], tok)
  return Row(_prompt(ids, [segs[0] for segs, _ in loaded], None, windows), index, 0,
             loaded[0][1] if loaded else None, text)


def _no_chunk(policy: str, where: str) -> None:
  if policy == "chunk":
    raise PromptError(f"--long_audio=chunk applies to task prompts; for {where} give ≤30 s audio or use "
                      "--long_audio=truncate")


# ------------------------------------------------------------------------------------------------
# Chat
# ------------------------------------------------------------------------------------------------


def _content_items(content) -> list[dict]:
  """A message's content as [{"audio": src} | {"text": str}] (accepts the Qwen2-Audio element shape too)."""
  if isinstance(content, str):
    return [{"text": content}]
  items = []
  for element in content:
    if not isinstance(element, Mapping):
      raise PromptError(f"chat: content element {element!r} is not an object")
    if element.get("type") == "audio" or "audio" in element or "audio_url" in element:
      items.append({"audio": element.get("audio", element.get("audio_url"))})
    elif "text" in element:
      items.append({"text": str(element["text"])})
    else:
      raise PromptError(f"chat: content element {dict(element)!r} has neither audio nor text")
  return items


def check_messages(messages: Sequence[Mapping[str, Any]]) -> None:
  if not messages:
    raise PromptError("chat: the conversation is empty")
  for k, m in enumerate(messages):
    if not isinstance(m, Mapping) or m.get("role") not in ("system", "user", "assistant") or "content" not in m:
      raise PromptError(f"chat: message {k} must be {{'role': system|user|assistant, 'content': ...}}")
  if messages[-1]["role"] != "user":
    raise PromptError("chat: the last message must come from the user")


def chat_row(encoder: ExampleEncoder, messages: Sequence[Mapping[str, Any]], index: int, policy: str) -> Row:
  """The conversation as the family's chat prompt (ends with the assistant's turn opened)."""
  check_messages(messages)
  _no_chunk(policy, "chat")
  tok = encoder.tokenizer
  audio_sources = [item["audio"] for m in messages for item in _content_items(m["content"]) if "audio" in item]
  loaded = [load_clip(src, policy, encoder.family) for src in audio_sources]
  if encoder.family == "qwen2-audio":
    q2_messages = [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str) else
                    [{"type": "audio"} if "audio" in it else {"type": "text", "text": it["text"]}
                     for it in _content_items(m["content"])]} for m in messages]
    counts = [info.windows[0].audio_tokens for _, info in loaded]
    ids = make_qwen2_audio_context(tok, q2_messages, counts)
    kept = list(range(len(loaded)))
    text = ""
  else:
    system = DEFAULT_SYSTEM
    turns, query = [], None
    for m in messages:
      body = _qwen_audio_text(_content_items(m["content"]))
      if m["role"] == "system":
        system = body
      elif m["role"] == "user":
        turns.append([body, None])
      else:
        if not turns or turns[-1][1] is not None:
          raise PromptError("chat: an assistant message must follow a user message")
        turns[-1][1] = body
    query = turns.pop()[0]
    counts = [info.windows[0].audio_tokens for _, info in loaded]
    ctx = make_chat_context(tok, query, [tuple(t) for t in turns], system=system, audio_tokens=counts)
    ids, kept, text = ctx.ids, list(ctx.audio_indices), ctx.text
  segments = [loaded[i][0][0] for i in kept]
  windows = [loaded[i][1].windows[0] for i in kept]
  return Row(_prompt(ids, segments, None, windows), index, 0, loaded[0][1] if loaded else None, text)


def _qwen_audio_text(items: Sequence[Mapping[str, str]]) -> str:
  """Qwen-Audio-Chat's `from_list_format`: `Audio k:<audio>src</audio>\\n` per audio, then the text."""
  text, n = "", 0
  for item in items:
    if "audio" in item:
      n += 1
      name = item["audio"] if isinstance(item["audio"], str) else "array"
      text += f"Audio {n}:<audio>{name}</audio>\n"
    else:
      text += item["text"]
  return text
