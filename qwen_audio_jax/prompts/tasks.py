"""Hierarchical-tag task prompts of the Qwen-Audio base model (spec §5), as data.

Each task is the tag sequence its `QA:eval_audio/*.py` script appends after `<audio>{path}</audio>`,
in the paper's order: transcription tag, audio language, task, text language, timestamps, output
instruction. `{lang}`, `{src}`, `{tgt}` are language codes, `{question}` free text (AQA).
"""

from __future__ import annotations

import dataclasses
import string

from qwen_audio_jax.tokenizer.special_tokens import LANGUAGES


class PromptError(ValueError):
  """A task prompt was asked for with an unknown task or wrong fields."""


@dataclasses.dataclass(frozen=True)
class TaskFormat:
  tags: tuple[str, ...]  # templates, concatenated without separators
  max_new_tokens: int  # greedy decoding budget of the eval script
  script: str  # QA:eval_audio/<script>


TASKS = {
    "asr": TaskFormat(("<|startoftranscript|>", "<|{lang}|>", "<|transcribe|>", "<|{lang}|>",
                       "<|notimestamps|>", "<|wo_itn|>"), 256, "evaluate_asr.py"),
    "s2tt": TaskFormat(("<|startoftranscript|>", "<|{src}|>", "<|translate|>", "<|{tgt}|>",
                        "<|notimestamps|>", "<|itn|>"), 256, "evaluate_st.py"),
    "srwt": TaskFormat(("<|startoftranscript|>", "<|{lang}|>", "<|transcribe|>", "<|{lang}|>",
                        "<|timestamps|>", "<|0.00|>"), 256, "evaluate_srwt.py"),
    "aac": TaskFormat(("<|startofanalysis|>", "<|unknown|>", "<|caption|>", "<|en|>",
                       "<|notimestamps|>", "<|caption_clotho|>"), 30, "evaluate_caption.py"),
    "asc": TaskFormat(("<|startofanalysis|>", "<|unknown|>", "<|keyword|>", "<|en|>",
                       "<|notimestamps|>", "<|scene|>"), 10, "evaluate_scene.py"),
    "ser": TaskFormat(("<|startofanalysis|>", "<|en|>", "<|keyword|>", "<|en|>",
                       "<|notimestamps|>", "<|emotion_recognition|>"), 4, "evaluate_emotion.py"),
    "aqa": TaskFormat(("<|startofanalysis|>", "<|en|>", "<|question|>", "{question}", "<|answer|>"),
                      4, "evaluate_aqa.py"),
    "vsc": TaskFormat(("<|startofanalysis|>", "<|en|>", "<|keyword|>", "<|en|>",
                       "<|notimestamps|>", "<|vocal_classification|>"), 4, "evaluate_vocal_sound.py"),
    "mna": TaskFormat(("<|startofanalysis|>", "<|unknown|>", "<|keyword|>", "<|en|>",
                       "<|notimestamps|>", "<|note_analysis|>"), 30, "evaluate_note_analysis.py"),
}
LANGUAGE_FIELDS = ("lang", "src", "tgt")


def task_fields(task: str) -> tuple[str, ...]:
  """Names of the fields a task's tags need, e.g. ('lang',) for 'asr'."""
  fmt = _task(task)
  names = [name for tag in fmt.tags for _, name, _, _ in string.Formatter().parse(tag) if name]
  return tuple(dict.fromkeys(names))


def _task(task: str) -> TaskFormat:
  if task not in TASKS:
    raise PromptError(f"task {task!r} is unknown; choose one of {sorted(TASKS)}")
  return TASKS[task]


def task_tags(task: str, **fields: str) -> str:
  """The tag string of `task` with its fields filled in (no audio part)."""
  fmt = _task(task)
  needed = set(task_fields(task))
  if set(fields) != needed:
    raise PromptError(f"task {task!r} needs fields {sorted(needed)}, got {sorted(fields)}")
  for name in LANGUAGE_FIELDS:
    if name in fields and fields[name] not in LANGUAGES:
      raise PromptError(f"task {task!r}: {name}={fields[name]!r} is not one of {LANGUAGES}")
  return "".join(tag.format(**fields) for tag in fmt.tags)


def task_prompt(task: str, audio_path: str, **fields: str) -> str:
  """`<audio>{audio_path}</audio>` + the task's tags: the exact eval-script prompt."""
  if "<audio>" in audio_path or "</audio>" in audio_path:
    raise PromptError(f"audio path {audio_path!r} contains an audio tag")
  return f"<audio>{audio_path}</audio>" + task_tags(task, **fields)


def s2tt_languages(source: str) -> tuple[str, str]:
  """(src, tgt) from a CoVoST2 source name as evaluate_st.py does: `split('_')[-3]`, `[-2]`."""
  parts = source.split("_")
  if len(parts) < 3:
    raise PromptError(f"s2tt source name {source!r} has fewer than 3 '_'-separated parts")
  return parts[-3], parts[-2]
