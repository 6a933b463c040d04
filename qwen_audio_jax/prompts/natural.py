"""Qwen2-Audio's natural-language task prompts (its base model replaced Qwen-Audio's tag prompts).

The text after `<|audio_bos|><|AUDIO|><|audio_eos|>`, one per task, as data. Sources: the ASR, SER and
VSC prompts are the ones Qwen2-Audio's evaluation manifests use (`eval_audio/*_eval.jsonl`, as quoted by
third-party evaluation suites; the files themselves are not in the repository), the AAC prompt is the
Qwen2-Audio-7B model card's; S2TT, ASC, AQA, SRWT and MNA have no published prompt, so the ones below
are this project's, written in the same style. A record's own `prompt` always wins over this table.
Language codes in `<|xx|>` form are plain text for the Qwen2-Audio tokenizer (as in those manifests).
"""

from __future__ import annotations

import string

from qwen_audio_jax.prompts.tasks import PromptError

LANGUAGE_NAMES = {"en": "English", "zh": "Chinese", "de": "German", "es": "Spanish", "ko": "Korean",
                  "fr": "French", "ja": "Japanese", "it": "Italian", "yue": "Cantonese"}

NATURAL_PROMPTS = {
    "asr": "Detect the language and recognize the speech: <|{lang}|>",
    "s2tt": "Detect the language and translate the speech into {tgt_name}: <|{src}|>",
    "srwt": "Detect the language and recognize the speech with word timestamps: <|{lang}|>",
    "aac": "Generate the caption in English:",
    "asc": "Classify the acoustic scene in English:",
    "ser": "Recognize the emotion with keywords in English:",
    "aqa": "Listen to the audio and answer the question in English: {question} Your answer is:",
    "vsc": "Classify the human vocal sound to VocalSound in English:",
    "mna": "Describe the musical note (pitch, velocity, instrument, sonic qualities):",
}


def natural_prompt(task: str, lang: str = "en", tgt: str = "en", question: str = "") -> str:
  """The Qwen2-Audio prompt of `task` (no audio part); `tgt` is the answer language (S2TT)."""
  if task not in NATURAL_PROMPTS:
    raise PromptError(f"task {task!r} has no Qwen2-Audio prompt; choose one of {sorted(NATURAL_PROMPTS)} "
                      "or give the record a 'prompt'")
  template = NATURAL_PROMPTS[task]
  names = {name for _, name, _, _ in string.Formatter().parse(template) if name}
  if "tgt_name" in names and tgt not in LANGUAGE_NAMES:
    raise PromptError(f"task {task!r}: no language name for text_lang={tgt!r} (known: "
                      f"{', '.join(sorted(LANGUAGE_NAMES))}); give the record a 'prompt'")
  if "question" in names and not question:
    raise PromptError(f"task {task!r} needs a 'question'")
  return template.format(lang=lang, src=lang, tgt_name=LANGUAGE_NAMES.get(tgt, tgt), question=question)
