"""asr_wer@whisper-normalizer: WER after OpenAI Whisper's text normalisers, computed by jiwer.

Not Qwen-Audio's recipe (use asr_wer@qwen-audio-v1 to compare with the paper); this is the
convention of Whisper / the Open ASR leaderboard, for comparison with systems scored that way.
Steps, ref and hyp alike: every `<|…|>` tag → a space (`prompts.strip_tags`); then
  en: `whisper_normalizer.english.EnglishTextNormalizer` (lower-case, brackets and fillers removed,
      contractions expanded, numbers and British spellings standardised, punctuation removed);
  other languages: `whisper_normalizer.basic.BasicTextNormalizer` (brackets, symbols and punctuation
      removed, lower-cased).
Units: zh / yue / ja → characters (whitespace removed, `jiwer.process_characters`); other languages →
words (`jiwer.process_words`). Corpus WER = Σ(S + D + I) / Σ(H + S + D), overall and per `source`
(what `jiwer.wer(refs, hyps)` gives on the normalised lists). Give `lang` (one code or one per sample).
"""

from __future__ import annotations

import functools

from qwen_audio_jax.eval.recipes.base import Recipe, RecipeError, require, version_of
from qwen_audio_jax.prompts import strip_tags

CHAR_LANGS = ("zh", "yue", "ja")
_INSTALL = "whisper-normalizer jiwer"


@functools.lru_cache(maxsize=None)
def normaliser(lang: str):
  """The Whisper normaliser used for `lang` (English for 'en', basic otherwise)."""
  if lang == "en":
    return require("asr_wer@whisper-normalizer", "whisper_normalizer.english", _INSTALL).EnglishTextNormalizer()
  return require("asr_wer@whisper-normalizer", "whisper_normalizer.basic", _INSTALL).BasicTextNormalizer()


def normalise(text: str, lang: str) -> str:
  text = normaliser(lang)(strip_tags(text))
  return "".join(text.split()) if lang in CHAR_LANGS else " ".join(text.split())


class AsrWerWhisper(Recipe):
  __doc__ = __doc__
  metric, version, headline = "asr_wer", "whisper-normalizer", "wer"
  fields = {"lang": "language code: 'en' → English normaliser; zh/yue/ja → characters; else basic, words"}

  def _sample(self, ref, hyp, fields):
    lang = fields.get("lang")
    if not lang:
      raise RecipeError(f"{self.name}: needs lang= ('en' → English normaliser, others → basic normaliser)")
    jiwer = require(self.name, "jiwer", _INSTALL)
    ref_norm, hyp_norm = normalise(ref, lang), normalise(hyp, lang)
    process = jiwer.process_characters if lang in CHAR_LANGS else jiwer.process_words
    out = process(ref_norm, hyp_norm)
    s, d, i, h = out.substitutions, out.deletions, out.insertions, out.hits
    return {"lang": lang, "ref_norm": ref_norm, "hyp_norm": hyp_norm, "errors": s + d + i,
            "ref_length": h + s + d, "substitutions": s, "deletions": d, "insertions": i}

  def _aggregate(self, samples):
    parts = {k: sum(s[k] for s in samples) for k in ("errors", "ref_length", "substitutions", "deletions",
                                                       "insertions")}
    if parts["ref_length"] == 0:
      raise RecipeError(f"{self.name}: every reference of {len(samples)} sample(s) is empty after "
                        "normalisation: WER is undefined")
    return {"wer": parts["errors"] / parts["ref_length"], **parts}, None

  def impl(self):
    return {"normaliser": "strip <|tags|>, then whisper_normalizer EnglishTextNormalizer (en) / "
                          "BasicTextNormalizer (others)",
            "units": f"characters for {', '.join(CHAR_LANGS)} (whitespace removed), words otherwise",
            "wer": "corpus: sum(S+D+I) / sum(H+S+D) (jiwer)",
            "whisper-normalizer": version_of("whisper-normalizer"), "jiwer": version_of("jiwer")}
