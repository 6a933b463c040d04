"""One record → token ids, loss mask and ≤30 s waveforms (decode, length policy, prompt, tokenise).

Runs inside grain workers. Everything that makes a record unusable (undecodable or non-finite audio,
too long under policy "error", too short for one audio token, too many tokens, unknown task/language)
raises a `ValueError`/`OSError` subclass; the pipeline turns those into counted bad examples.
Prompts come from `qwen_audio_jax.prompts` (hierarchical tags for Qwen-Audio), audio arithmetic from
`audio.lengths` (through `audio.long_audio.ClipInfo`), tokenisation from `qwen_audio_jax.tokenizer`.
"""

from __future__ import annotations

import dataclasses
import re
import warnings

import numpy as np

from qwen_audio_jax.audio.load import load_audio
from qwen_audio_jax.audio.long_audio import prepare_clip
from qwen_audio_jax.data.records import describe
from qwen_audio_jax.prompts import build_training_example, expand_audio, task_fields, task_tags
from qwen_audio_jax.prompts.conversation import build_chat_example, conversation_audios
from qwen_audio_jax.prompts.qwen2_tasks import qwen2_task_prompt
from qwen_audio_jax.tokenizer import get_tokenizer

QWEN2_AUDIO_SLOT = "<|audio_bos|><|AUDIO|><|audio_eos|>"
DATA_ERRORS = (ValueError, OSError)  # AudioError, PromptError, SequenceTooLongError, ... are ValueErrors
_TRAILING_TIME_TOKEN = re.compile(r"<\|\d{1,2}\.\d{2}\|>$")


@dataclasses.dataclass
class Encoded:
  """A usable example: ids (prompt [+ answer + eod]) and the audio it refers to."""

  ids: np.ndarray  # [T] int32
  loss_mask: np.ndarray  # [T] int32, 1 where ids[t] is an answer token or the final eod
  prompt_length: int  # ids[:prompt_length] is the prompt (audio span included)
  waveforms: list[np.ndarray]  # one ≤30 s float32 16 kHz segment per audio slot used
  encoder_frames: list[int]  # T per segment (lengths.py, via ClipInfo)
  audio_seconds: float  # true duration of the decoded clip
  truncated: bool  # policy "truncate" cut the clip
  task: str = ""  # the record's task (records.TASKS), "" for conversations and unknown tasks


class ExampleEncoder:
  """Turns records into `Encoded` examples for one model family; picklable (tokenizer is lazy)."""

  def __init__(self, *, family: str = "qwen-audio", vocab_path: str | None = None,
               long_audio: str = "error", max_audios: int = 1, max_tokens: int | None = None):
    self.family, self.vocab_path = family, vocab_path
    self.long_audio, self.max_audios, self.max_tokens = long_audio, int(max_audios), max_tokens
    self._tokenizer = None
    self._text_specials = None

  @classmethod
  def from_config(cls, config) -> "ExampleEncoder":
    return cls(family=config.family, vocab_path=config.vocab_path, long_audio=config.long_audio,
               max_audios=config.max_audios, max_tokens=max(int(b) for b in config.seq_buckets))

  def __getstate__(self):
    return {**self.__dict__, "_tokenizer": None, "_text_specials": None}

  @property
  def tokenizer(self):
    if self._tokenizer is None:
      self._tokenizer = get_tokenizer(self.family, self.vocab_path)
    return self._tokenizer

  @property
  def text_specials(self) -> frozenset[str]:
    """Specials parsed in prompt/answer text: task tags yes; eod, ChatML and audio markers never (built
    once per process: ~3,500 specials, two lookups per example)."""
    if self._text_specials is None:
      tok = self.tokenizer
      reserved = {tok.eod_id, tok.im_start_id, tok.im_end_id, tok.audio_start_id, tok.audio_end_id,
                  tok.audio_pad_id}
      self._text_specials = frozenset(s for s, i in tok.special_tokens.items() if i not in reserved)
    return self._text_specials

  # --- audio -------------------------------------------------------------------------------
  def audio(self, record: dict):
    """Decoded, policy-checked segments and their ClipInfo."""
    name = describe(record)
    samples = load_audio(record["audio"])
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # "truncate" is counted in the metrics instead of warned
      segments, info = prepare_clip(samples, policy=self.long_audio, source=name, family=self.family)
    if len(segments) > self.max_audios:
      raise ValueError(f"{name}: {info.duration_s:.1f} s audio needs {len(segments)} 30 s chunks but "
                       f"max_audios={self.max_audios}")
    return segments, info

  # --- text --------------------------------------------------------------------------------
  def prompt_text(self, record: dict) -> str:
    """The record's own prompt, else the task's tag prompt (Qwen-Audio) or natural-language prompt
    (Qwen2-Audio, `prompts/qwen2_tasks.py`), without the audio part."""
    if record.get("prompt"):
      return record["prompt"]
    values = {"lang": record["lang"], "src": record["lang"], "tgt": record["text_lang"],
              "question": record["question"]}
    fields = {k: values[k] for k in task_fields(record["task"])}
    if self.family != "qwen-audio":  # Qwen2-Audio: natural-language prompts (prompts/qwen2_tasks.py)
      return qwen2_task_prompt(record["task"], **fields)
    return task_tags(record["task"], **fields)

  def prompt_ids(self, record: dict, audio_tokens: list[int]) -> list[int]:
    """Audio span(s) expanded to n placeholders each, then the prompt."""
    tok, prompt = self.tokenizer, self.prompt_text(record)
    if self.family == "qwen-audio":
      audio_ids = expand_audio("<audio>a</audio>" * len(audio_tokens), audio_tokens, tok)
      return audio_ids + tok.encode(prompt, allowed_special=self.text_specials)
    if "<|AUDIO|>" not in prompt:
      prompt = QWEN2_AUDIO_SLOT * len(audio_tokens) + prompt
    return expand_audio(prompt, audio_tokens, tok)

  def answer_ids(self, record: dict, prompt: str) -> list[int]:
    answer = record["text"]
    forced = _TRAILING_TIME_TOKEN.search(prompt)
    if forced and answer.startswith(forced.group(0)):
      answer = answer[len(forced.group(0)):]  # SRWT prompts already force the first time token
    return self.tokenizer.encode(answer, allowed_special=self.text_specials)

  # --- conversations (chat SFT) -----------------------------------------------------------
  def conversation_audio(self, record: dict):
    """One ≤30 s window per audio of the conversation (none for text-only): (segments, infos)."""
    name, segments, infos = describe(record), [], []
    paths = conversation_audios(record["messages"])
    if len(paths) > self.max_audios:
      raise ValueError(f"{name}: {len(paths)} audios in the conversation but max_audios={self.max_audios}")
    for k, path in enumerate(paths):
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        windows, info = prepare_clip(load_audio(path), policy=self.long_audio, source=f"{name} audio {k + 1}",
                                     family=self.family)
      if len(windows) != 1:
        raise ValueError(f"{name}: audio {k + 1} ({path}) is {info.duration_s:.1f} s; a conversation takes one "
                         "30 s window per audio (use long_audio='truncate' or cut it)")
      segments.append(windows[0])
      infos.append(info)
    return segments, infos

  def encode_conversation(self, record: dict, *, with_answer: bool = True) -> Encoded:
    """A chat SFT example (loss on assistant turns, prompts/conversation.py) or, without answer, the
    conversation up to its last assistant turn followed by the generation prompt."""
    segments, infos = self.conversation_audio(record)
    counts = [info.windows[0].audio_tokens for info in infos]
    messages = record["messages"]
    if with_answer:
      example = build_chat_example(self.tokenizer, messages, counts, record.get("loss_on", "assistant"),
                                   max_length=self.max_tokens)
      ids, mask = example.ids, example.loss_mask
      prompt_length = int(np.argmax(mask)) if mask.any() else len(ids)
    else:
      last = max(k for k, m in enumerate(messages) if m["role"] == "assistant")
      context = build_chat_example(self.tokenizer, messages[:last] + [{"role": "assistant", "content": "x"}],
                                   counts[:len(conversation_audios(messages[:last]))])
      ids = context.ids[:int(np.argmax(context.loss_mask))]  # up to "<|im_start|>assistant\n"
      if self.max_tokens is not None and len(ids) > self.max_tokens:
        raise ValueError(f"{describe(record)}: prompt of {len(ids)} tokens > {self.max_tokens}")
      mask, prompt_length = np.zeros(len(ids), np.int32), len(ids)
    return Encoded(ids=np.asarray(ids, np.int32), loss_mask=np.asarray(mask, np.int32), prompt_length=prompt_length,
                   waveforms=[np.asarray(s, np.float32) for s in segments],
                   encoder_frames=[info.windows[0].encoder_frames for info in infos],
                   audio_seconds=float(sum(info.duration_s for info in infos)),
                   truncated=any(info.truncated for info in infos))

  # --- whole examples ----------------------------------------------------------------------
  def encode(self, record: dict, *, with_answer: bool = True) -> Encoded:
    """Training example (prompt + answer + eod, masked) or, without answer, an eval prompt."""
    if "messages" in record:
      return self.encode_conversation(record, with_answer=with_answer)
    segments, info = self.audio(record)
    audio_tokens = [w.audio_tokens for w in info.windows]
    prompt = self.prompt_ids(record, audio_tokens)
    if with_answer:
      example = build_training_example(prompt, self.answer_ids(record, self.prompt_text(record)),
                                       self.tokenizer.eod_id, max_length=self.max_tokens)
      ids, mask = example.ids, example.loss_mask
    else:
      if self.max_tokens is not None and len(prompt) > self.max_tokens:
        raise ValueError(f"{describe(record)}: prompt of {len(prompt)} tokens > {self.max_tokens}")
      ids, mask = np.asarray(prompt, np.int32), np.zeros(len(prompt), np.int32)
    return Encoded(ids=ids, loss_mask=mask, prompt_length=len(prompt),
                   waveforms=[np.asarray(s, np.float32) for s in segments],
                   encoder_frames=[w.encoder_frames for w in info.windows],
                   audio_seconds=float(info.duration_s), truncated=bool(info.truncated),
                   task=str(record.get("task", "")))
