"""srwt_aas@qwen-audio-v1: average alignment shift (AAS) and WER of Qwen-Audio's `evaluate_srwt.py`.

Words: the text between consecutive time tokens (`prompts.parse_word_timestamps(keep_empty=True)`,
the script's `re.split(ts_pattern, body)[1:-1]`: `<|sil|>` and '' are words, text before the first
and after the last time token is dropped). The script scores the generated continuation, which starts
after the forced `<|0.00|>` of the prompt, so the first hypothesis word has no start time and is
dropped; pass the same text to get the same figure.
Alignment: `edit_distance.SequenceMatcher(ref_words, hyp_words).get_opcodes()` (the package the
script uses; lowest-cost backtrace, ties → substitution, insertion, deletion); every "equal" pair is a
matched word and adds |Δstart| + |Δend|. AAS = Σ shift / Σ matched words over the subset, in seconds
(the paper's 51.5 ms = 0.0515). wer: the asr_wer@qwen-audio-v1 computation on the texts with tags
removed (`lang` / `dataset` as there; the script's only dataset, industrial_srwt, is zh → characters).

Deviation: a ref or hyp with no time token at all (the script's "pattern error") is left out of AAS
here and counted in `pattern_errors`; the script drops it from one list only, which then either fails
an assertion or pairs the following utterances wrongly. The script's removal of
`<|startoftranscript|>`, `<|transcribe|>` and `<|en|>`/`<|zh|>` only differs from this when such a tag
sits between two time tokens; its time pattern `<|d.d+|>` vs the tokenizer's two-decimal time tokens
only when the text holds time tags the tokenizer cannot produce. A text with a single time token has
no words here; the script gives it one phantom '' word without times, whose match makes it skip the
utterance ("length mismatch"), so both add nothing (checked against a re-implementation in the tests).
"""

from __future__ import annotations

from qwen_audio_jax.eval.recipes.asr_wer_v1 import (
    OFFICIAL_DATASET_LANG,
    corpus_wer,
    edit_errors,
    remove_sp,
    resolve_lang,
    wer_items,
)
from qwen_audio_jax.eval.recipes.base import Recipe, require, version_of
from qwen_audio_jax.prompts import parse_word_timestamps
from qwen_audio_jax.tokenizer.special_tokens import TIME_TOKEN_RE


def matched_words(recipe: str, ref_words: list[dict], hyp_words: list[dict]) -> list[tuple[dict, dict]]:
  """(ref word, hyp word) pairs that edit_distance's alignment marks equal, in order."""
  edit_distance = require(recipe, "edit_distance", "edit-distance")
  matcher = edit_distance.SequenceMatcher([w["word"] for w in ref_words], [w["word"] for w in hyp_words])
  return [(ref_words[i1], hyp_words[j1]) for op, i1, _, j1, _ in matcher.get_opcodes() if op == "equal"]


class SrwtAasV1(Recipe):
  __doc__ = __doc__
  metric, version, headline = "srwt_aas", "qwen-audio-v1", "aas"
  fields = {"lang": "language of the text for the WER part ('zh' → characters)",
            "dataset": f"official dataset name → its language ({', '.join(OFFICIAL_DATASET_LANG)})"}

  def _sample(self, ref, hyp, fields):
    lang = resolve_lang(self.name, fields)
    ref_words, hyp_words = parse_word_timestamps(ref, keep_empty=True), parse_word_timestamps(hyp, keep_empty=True)
    pattern_error = TIME_TOKEN_RE.search(ref) is None or TIME_TOKEN_RE.search(hyp) is None
    pairs = [] if pattern_error else matched_words(self.name, ref_words, hyp_words)
    shift = sum(abs(r["start"] - h["start"]) + abs(r["end"] - h["end"]) for r, h in pairs)
    ref_norm, hyp_norm = remove_sp(ref, lang), remove_sp(hyp, lang)
    ref_items, hyp_items = wer_items(ref_norm, lang), wer_items(hyp_norm, lang)
    return {"lang": lang, "ref_words": ref_words, "hyp_words": hyp_words, "pattern_error": pattern_error,
            "matched": len(pairs), "shift": shift, "ref_norm": ref_norm, "hyp_norm": hyp_norm,
            "errors": edit_errors(ref_items, hyp_items), "ref_length": len(ref_items)}

  def _aggregate(self, samples):
    scored = [s for s in samples if not s["pattern_error"] and s["matched"]]
    shift, matched = sum(s["shift"] for s in scored), sum(s["matched"] for s in scored)
    worst = max(scored, key=lambda s: s["shift"] / s["matched"], default=None)
    return {"aas": shift / matched if matched else None, "shift": shift, "matched_words": matched,
            "pattern_errors": sum(s["pattern_error"] for s in samples),
            "max_shift": worst["shift"] / worst["matched"] if worst else None,
            "max_shift_index": worst["index"] if worst else None,
            **corpus_wer(self.name, samples)}, None

  def impl(self):
    return {"script": "Qwen-Audio eval_audio/evaluate_srwt.py (AverageShiftCalculator, compute_wer)",
            "aas": "sum(|dstart|+|dend|) / matched words, seconds; edit_distance.SequenceMatcher 'equal' pairs",
            "wer": "asr_wer@qwen-audio-v1 on tag-free text", "edit-distance": version_of("edit-distance"),
            "editdistance": version_of("editdistance")}
