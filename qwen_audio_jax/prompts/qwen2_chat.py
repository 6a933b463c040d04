"""Qwen2-Audio chat format (spec §8): the HF processor's default ChatML template, then audio expansion.

`messages`: [{"role": ..., "content": str | [{"type": "audio", "audio_url": ...} | {"type": "text",
"text": ...}, ...]}]. A system turn "You are a helpful assistant." is added when the first message is
not a system message; the k-th audio renders as `Audio k: <|audio_bos|><|AUDIO|><|audio_eos|>\\n`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from qwen_audio_jax.prompts.audio_spans import expand_audio
from qwen_audio_jax.prompts.chatml import DEFAULT_SYSTEM
from qwen_audio_jax.tokenizer.base import Tokenizer

AUDIO_SLOT = "<|audio_bos|><|AUDIO|><|audio_eos|>"


def _is_audio(element: Mapping[str, Any]) -> bool:
  return "audio" in element or "audio_url" in element or element.get("type") == "audio"


def render_qwen2_audio_chat(messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> str:
  """The prompt text exactly as transformers' Qwen2AudioProcessor default chat template renders it."""
  text, n_audios = "", 0
  for k, message in enumerate(messages):
    if k == 0 and message["role"] != "system":
      text += f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n"
    text += f"<|im_start|>{message['role']}\n"
    content = message["content"]
    if isinstance(content, str):
      text += content
    else:
      for element in content:
        if _is_audio(element):
          n_audios += 1
          text += f"Audio {n_audios}: {AUDIO_SLOT}\n"
        elif "text" in element:
          text += element["text"]
        else:
          raise ValueError(
              f"render_qwen2_audio_chat: content element {dict(element)!r} is neither audio nor text")
    text += "<|im_end|>\n"
  if add_generation_prompt:
    text += "<|im_start|>assistant\n"
  return text


def make_qwen2_audio_context(tokenizer: Tokenizer, messages: Sequence[Mapping[str, Any]],
                             audio_tokens: Sequence[int], add_generation_prompt: bool = True) -> list[int]:
  """Prompt ids: the rendered chat, every special parsed (as the HF tokenizer does), audio expanded."""
  if tokenizer.family.audio_layout != "placeholder":
    raise ValueError(f"make_qwen2_audio_context: needs a qwen2-audio tokenizer, got {tokenizer.family.name}")
  text = render_qwen2_audio_chat(messages, add_generation_prompt)
  return expand_audio(tokenizer.encode(text, allowed_special="all"), audio_tokens, tokenizer)
