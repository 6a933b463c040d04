"""Natural-language task prompts of the Qwen2-Audio base model (it has no hierarchical tags, spec §8).

Qwen2-Audio's evaluation prompts live in its downloadable eval jsonl files, not in its repository; the
two shown in its README / model card are used verbatim ("Generate the caption in English:" and the
ASR prompt ending in the language tag). The others are written in the same style (marked `ours`) and
can be replaced per record with a `prompt` field. The audio slot comes first, as in the README.
"""

from __future__ import annotations

from qwen_audio_jax.prompts.tasks import PromptError, TASKS

AUDIO_SLOT = "<|audio_bos|><|AUDIO|><|audio_eos|>"
LANGUAGE_NAMES = {"en": "English", "zh": "Chinese", "de": "German", "es": "Spanish", "ko": "Korean",
                  "fr": "French", "ja": "Japanese", "it": "Italian"}

QWEN2_PROMPTS = {  # task: (template, source)
    "asr": ("Detect the language and recognize the speech: <|{lang}|>", "model card"),
    "aac": ("Generate the caption in English:", "README"),
    "s2tt": ("Translate the speech into {tgt_name}:", "ours"),
    "srwt": ("Recognize the speech with word-level timestamps: <|{lang}|>", "ours"),
    "asc": ("Classify the acoustic scene:", "ours"),
    "ser": ("Recognize the emotion of the speaker:", "ours"),
    "aqa": ("{question}", "ours"),
    "vsc": ("Classify the vocal sound:", "ours"),
    "mna": ("Analyze the musical note:", "ours"),
}


def qwen2_task_prompt(task: str, **fields: str) -> str:
  """The prompt text after the audio slot for `task` (fields: lang, src, tgt, question as needed)."""
  if task not in QWEN2_PROMPTS:
    raise PromptError(f"task {task!r} is unknown; choose one of {sorted(TASKS)}")
  template = QWEN2_PROMPTS[task][0]
  values = dict(fields)
  if "tgt" in values:
    if values["tgt"] not in LANGUAGE_NAMES:
      raise PromptError(f"task {task!r}: tgt={values['tgt']!r} is not one of {sorted(LANGUAGE_NAMES)}")
    values["tgt_name"] = LANGUAGE_NAMES[values["tgt"]]
  try:
    return template.format(**values)
  except KeyError as missing:
    raise PromptError(f"task {task!r} needs field {missing.args[0]!r}") from None
