"""Multi-turn chat SFT examples (ChatML) for Qwen-Audio-Chat and Qwen2-Audio-Instruct, with their loss mask.

`messages` (the canonical form every conversation source is turned into):
  [{"role": "system" | "user" | "assistant",
    "content": str | [{"type": "text", "text": str} | {"type": "audio", "audio": path}, ...]}, ...]
Audios are numbered over the whole conversation (`Audio 1`, `Audio 2`, ...); a conversation may have none.

Token layout, both families (what the references train on):
  <|im_start|>system\\n{system}<|im_end|>\\n  (<|im_start|>{role}\\n{content}<|im_end|>\\n)*
A system turn "You are a helpful assistant." is added when the first message is not a system message.
* qwen-audio (Qwen-Audio-Chat): an audio element renders as `Audio k: <audio>{path}</audio>\\n` (the spelling
  of the web demo and of `assets/sft_sample.txt`); role and content are encoded separately, the content with
  only the family's chat specials parsed (as `qwen_generation_utils.make_context` and Qwen's `finetune.py`).
* qwen2-audio (Qwen2-Audio-Instruct): the text of transformers' Qwen2AudioProcessor default chat template
  (`render_qwen2_audio_chat`, no generation prompt), each `role\\ncontent` stretch encoded as a whole with every
  special parsed, exactly as the HF tokenizer encodes the rendered text.
Audio placeholders are then expanded to n_i pad ids (`expand_audio`).

Loss (`loss_on`; the mask is 1 where the token is a training target, like `labels != -100`):
* "assistant" (default): each assistant turn's content and its closing `<|im_end|>` and `\\n` (LLaMA-Factory's
  and ms-swift's qwen templates) - the model learns to end every answer with `<|im_end|>`.
* "qwen_finetune": Qwen (v1) `finetune.py`'s labels exactly: in addition every turn's `<|im_start|>` and the
  system / user turns' closing `<|im_end|>` `\\n`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from qwen_audio_jax.prompts.audio_spans import AudioMismatchError, count_audio_slots, expand_audio
from qwen_audio_jax.prompts.chatml import DEFAULT_SYSTEM
from qwen_audio_jax.prompts.loss_mask import SequenceTooLongError, TrainingExample
from qwen_audio_jax.prompts.qwen2_chat import AUDIO_SLOT
from qwen_audio_jax.tokenizer.base import Tokenizer

ROLES = ("system", "user", "assistant")
LOSS_ON = ("assistant", "qwen_finetune")


def is_audio(element: Mapping[str, Any]) -> bool:
  return element.get("type") == "audio" or "audio" in element or "audio_url" in element


def audio_path(element: Mapping[str, Any]) -> str:
  return str(element.get("audio", element.get("audio_url", "")))


def conversation_audios(messages: Sequence[Mapping[str, Any]]) -> list[str]:
  """Audio paths in conversation order."""
  return [audio_path(e) for m in messages if not isinstance(m["content"], str) for e in m["content"] if is_audio(e)]


def check_messages(messages: Sequence[Mapping[str, Any]], where: str = "conversation") -> None:
  """Roles known, system only first, at least one assistant turn with text, no audio in assistant turns."""
  if not messages:
    raise ValueError(f"{where}: no messages")
  for k, m in enumerate(messages):
    role = m.get("role")
    if role not in ROLES:
      raise ValueError(f"{where}: message {k} has role {role!r}; expected one of {ROLES}")
    if role == "system" and k:
      raise ValueError(f"{where}: message {k} is a system message; only the first may be")
    content = m.get("content")
    if not isinstance(content, (str, list)):
      raise ValueError(f"{where}: message {k} content must be a string or a list, got {type(content).__name__}")
    if role == "assistant" and not isinstance(content, str) and any(is_audio(e) for e in content):
      raise ValueError(f"{where}: message {k} (assistant) holds audio; answers are text only")
  if not any(m["role"] == "assistant" and _text(m["content"]).strip() for m in messages):
    raise ValueError(f"{where}: no assistant turn with text (nothing to train on)")


def _text(content) -> str:
  return content if isinstance(content, str) else "".join(e.get("text", "") for e in content if not is_audio(e))


def _with_system(messages: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
  if messages[0]["role"] == "system":
    return list(messages)
  return [{"role": "system", "content": DEFAULT_SYSTEM}] + list(messages)


def _content_text(content, first_audio: int, audio_text) -> tuple[str, int]:
  """Content as text (audio k rendered by `audio_text(k, path)`) and the number of audio elements."""
  if isinstance(content, str):
    return content, 0
  text, n = "", 0
  for element in content:
    if is_audio(element):
      n += 1
      text += audio_text(first_audio + n, audio_path(element))
    elif "text" in element:
      text += element["text"]
    else:
      raise ValueError(f"conversation: content element {dict(element)!r} is neither audio nor text")
  return text, n


def _v1_audio(k: int, path: str) -> str:
  return f"Audio {k}: <audio>{path}</audio>\n"


def _qwen2_audio(k: int, path: str) -> str:
  del path
  return f"Audio {k}: {AUDIO_SLOT}\n"  # transformers' Qwen2AudioProcessor default chat template


def _header_and_content(tok: Tokenizer, role: str, text: str) -> tuple[list[int], list[int]]:
  """qwen2-audio: `role\\ncontent` encoded as one stretch (as HF does), split where the content starts."""
  header = tok.encode(role + "\n", allowed_special="all")
  ids = tok.encode(role + "\n" + text, allowed_special="all")
  cut = 0
  while cut < min(len(header), len(ids)) and ids[cut] == header[cut]:
    cut += 1  # == len(header) unless the content starts with whitespace that merges with the newline
  return ids[:cut], ids[cut:]


def build_chat_example(tokenizer: Tokenizer, messages: Sequence[Mapping[str, Any]],
                       audio_tokens: Sequence[int] = (), loss_on: str = "assistant",
                       max_length: int | None = None) -> TrainingExample:
  """ids and loss mask of one conversation (see the module docstring); `audio_tokens[i]` is n of audio i."""
  if loss_on not in LOSS_ON:
    raise ValueError(f"conversation: loss_on={loss_on!r}; use one of {LOSS_ON}")
  check_messages(messages)
  tok, family = tokenizer, tokenizer.family
  counts = [int(n) for n in audio_tokens]
  messages = _with_system(messages)
  nl = tok.encode("\n")
  audio_text = _qwen2_audio if family.audio_layout == "placeholder" else _v1_audio
  turns, k = [], 0
  for m in messages:
    text, n = _content_text(m["content"], k, audio_text)
    turns.append((m["role"], text))
    k += n
  specials = "all" if family.chat_content_specials == "all" else set(family.chat_content_specials)
  ids, mask, used = [], [], 0
  for role, text in turns:
    if family.audio_layout == "placeholder":
      header, content = _header_and_content(tok, role, text)
    else:
      header = tok.encode(role, allowed_special=specials) + nl
      content = tok.encode(text, allowed_special=specials)
    slots = count_audio_slots(content, tok)
    if slots:
      if used + slots > len(counts):
        raise AudioMismatchError(f"conversation: more audio placeholders than the {len(counts)} audio(s) given")
      content = expand_audio(content, counts[used:used + slots], tok)
      used += slots
    answer = role == "assistant"
    boundary = loss_on == "qwen_finetune"
    ids += [tok.im_start_id] + header + content + [tok.im_end_id] + nl
    mask += ([int(boundary)] + [0] * len(header) + [int(answer)] * len(content)
             + [int(answer or boundary)] * (1 + len(nl)))
  if used != len(counts):
    raise AudioMismatchError(f"conversation: {used} audio placeholder(s) but {len(counts)} audio(s) given")
  if max_length is not None and len(ids) > max_length:
    raise SequenceTooLongError(f"conversation: {len(ids)} tokens > max_length {max_length}")
  return TrainingExample(ids=np.asarray(ids, np.int32), loss_mask=np.asarray(mask, np.int32))
