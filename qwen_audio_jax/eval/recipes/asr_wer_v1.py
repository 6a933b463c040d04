"""asr_wer@qwen-audio-v1: the WER of Qwen-Audio's `eval_audio/evaluate_asr.py`, nothing added.

Both ref and hyp go through the script's `remove_sp`: every `<|…|>` tag → a space, runs of whitespace
→ one space, the space before any of `!,.?;:` removed, left-stripped; for zh all whitespace removed.
Then its `EvaluationTokenizer(tokenizer_type="none", lowercase=True, punctuation_removal=False)`:
sacreBLEU's "none" tokenizer (identity) and lower-casing; punctuation is KEPT (so "word." ≠ "word").
Items = whitespace split; zh: the characters of the joined items (a CER, reported as "WER").
Corpus WER = Σ editdistance.eval(ref_items, hyp_items) / Σ len(ref_items), overall and per `source`.

Language: the script decides it per dataset, not per source or sample (`ds_collections`:
librispeech → en, aishell1 / aishell2 → zh; evaluate_srwt.py: industrial_srwt → zh). Give `lang`
(one code, or one per sample) or `dataset` (one of those names). Only "zh" is special: every other
code is scored on words, as in the script (so ja/yue/th would be scored on whitespace words).
Not the Whisper normaliser: no number/spelling normalisation, no punctuation removal (spec §9.13).
"""

from __future__ import annotations

import re

from qwen_audio_jax.eval.recipes.base import Recipe, RecipeError, require, version_of

PUNCS = "!,.?;:"
_TAG = re.compile(r"<\|.*?\|>")
_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_PUNC = re.compile(f" ?([{PUNCS}])")
OFFICIAL_DATASET_LANG = {"librispeech": "en", "aishell1": "zh", "aishell2": "zh", "industrial_srwt": "zh"}


def remove_sp(text: str, lang: str) -> str:
  """evaluate_asr.py / evaluate_srwt.py `remove_sp`."""
  text = _TAG.sub(" ", text)
  text = _SPACES.sub(" ", text)
  text = _SPACE_BEFORE_PUNC.sub(r"\1", text)
  text = text.lstrip(" ")
  if lang == "zh":
    text = _SPACES.sub("", text)
  return text


def wer_items(text: str, lang: str) -> list[str]:
  """`EvaluationTokenizer("none", lowercase=True).tokenize(text).split()`; zh → characters."""
  none_tokenizer = require("asr_wer@qwen-audio-v1", "sacrebleu.tokenizers.tokenizer_none", "sacrebleu")
  items = none_tokenizer.NoneTokenizer()(text).lower().split()
  return list("".join(items)) if lang == "zh" else items


def resolve_lang(recipe: str, fields: dict) -> str:
  """`lang`, or the language the official script assigns to `dataset`."""
  lang, dataset = fields.get("lang"), fields.get("dataset")
  if dataset is not None:
    if dataset not in OFFICIAL_DATASET_LANG:
      raise RecipeError(f"{recipe}: unknown dataset {dataset!r} (official ones: "
                        f"{', '.join(OFFICIAL_DATASET_LANG)}); give lang= instead")
    if lang is not None and lang != OFFICIAL_DATASET_LANG[dataset]:
      raise RecipeError(f"{recipe}: lang={lang!r} contradicts dataset={dataset!r} "
                        f"(official language {OFFICIAL_DATASET_LANG[dataset]!r})")
    return OFFICIAL_DATASET_LANG[dataset]
  if not lang:
    raise RecipeError(f"{recipe}: needs lang= (e.g. 'en', 'zh') or dataset= (one of "
                      f"{', '.join(OFFICIAL_DATASET_LANG)}): the script scores zh on characters")
  return str(lang)


def edit_errors(ref_items: list[str], hyp_items: list[str]) -> int:
  editdistance = require("asr_wer@qwen-audio-v1", "editdistance", "editdistance")
  return int(editdistance.eval(ref_items, hyp_items))


def corpus_wer(recipe: str, samples: list[dict]) -> dict:
  errors = sum(s["errors"] for s in samples)
  ref_length = sum(s["ref_length"] for s in samples)
  if ref_length == 0:
    raise RecipeError(f"{recipe}: every reference of {len(samples)} sample(s) is empty after "
                      "normalisation: WER is undefined")
  return {"wer": errors / ref_length, "errors": errors, "ref_length": ref_length}


class AsrWerV1(Recipe):
  __doc__ = __doc__
  metric, version, headline = "asr_wer", "qwen-audio-v1", "wer"
  fields = {"lang": "language code ('zh' → characters, anything else → words)",
            "dataset": f"official dataset name → its language ({', '.join(OFFICIAL_DATASET_LANG)})"}

  def _sample(self, ref, hyp, fields):
    lang = resolve_lang(self.name, fields)
    ref_norm, hyp_norm = remove_sp(ref, lang), remove_sp(hyp, lang)
    ref_items, hyp_items = wer_items(ref_norm, lang), wer_items(hyp_norm, lang)
    return {"lang": lang, "ref_norm": ref_norm, "hyp_norm": hyp_norm,
            "errors": edit_errors(ref_items, hyp_items), "ref_length": len(ref_items)}

  def _aggregate(self, samples):
    return corpus_wer(self.name, samples), None

  def impl(self):
    return {"script": "Qwen-Audio eval_audio/evaluate_asr.py",
            "normaliser": "remove_sp (tags → space, collapse spaces, no space before !,.?;:, lstrip; "
                          "zh: no whitespace) + sacrebleu 'none' tokenizer + lowercase, punctuation kept",
            "units": "zh: characters; other languages: whitespace words",
            "wer": "corpus: sum(editdistance) / sum(ref items)",
            "editdistance": version_of("editdistance"), "sacrebleu": version_of("sacrebleu")}
