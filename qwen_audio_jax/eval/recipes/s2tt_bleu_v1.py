"""s2tt_bleu@qwen-audio-v1: the corpus BLEU of Qwen-Audio's `eval_audio/evaluate_st.py`.

`sacrebleu.corpus_bleu(hyps, [refs], tokenize=T)` per `source` with T = "ja-mecab" for a ja target,
"zh" for zh, "13a" otherwise; every other option at sacreBLEU's default (exp smoothing, mixed case,
no effective order). The figure is sacreBLEU's 0–100 score (the script prints `.score`). hyps are
the decoded output stripped (the script strips at decode; special tags, if any, are kept); refs as
given. Target language: `tgt_lang` (one code or one per sample) or, as the script does, the
`source` name's `split('_')[-2]` (e.g. "covost2_en_de_test" → de). A subset whose samples need
different tokenizers has no single BLEU (bleu None, see per_source), as the script never pools them.
ja needs mecab-python3 + ipadic (`pip install 'sacrebleu[ja]'`); without them only ja fails.

sacreBLEU 2.6 (installed) vs 1.5.1 (pinned by the official EVALUATION.md), from sacreBLEU's code
and changelog: the 13a / zh / ja-mecab tokenizers give the same tokens (2.x rewrote whitespace
collapsing as `' '.join(split())` and added caches; ja-mecab is the same MeCab Tagger call with ipadic,
pinned binding mecab-python3 1.0.3 then, 1.0.12 here, which reports MeCab 0.996: tok:ja-mecab-0.996-IPA);
the BLEU formula is the same except
that 2.x returns 0.0 when no n-gram of any order matches (1.5.1's exp smoothing gave a small positive
number; sacreBLEU #141) — only a corpus with no matching unigram at all is affected; 2.2.0 allowed empty
references. The signature string format changed in 2.0 (`nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|
version:2.6.0` instead of `BLEU+case.mixed+numrefs.1+smooth.exp+tok.13a+version.1.5.1`).
"""

from __future__ import annotations

import functools

from qwen_audio_jax.eval.recipes.base import Recipe, RecipeDependencyError, RecipeError, require, version_of
from qwen_audio_jax.prompts import PromptError, s2tt_languages


def tokenizer_for(tgt_lang: str) -> str:
  """evaluate_st.py's rule: ja → ja-mecab, zh → zh, anything else → 13a."""
  return {"ja": "ja-mecab", "zh": "zh"}.get(tgt_lang, "13a")


@functools.lru_cache(maxsize=None)
def bleu_metric(tokenize: str, sentence: bool = False):
  """sacreBLEU's BLEU with corpus_bleu's defaults (sentence: effective order, as sentence_bleu)."""
  metrics = require("s2tt_bleu@qwen-audio-v1", "sacrebleu.metrics", "sacrebleu")
  try:
    return metrics.BLEU(tokenize=tokenize, effective_order=sentence)
  except (RuntimeError, ImportError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise RecipeDependencyError(f"s2tt_bleu@qwen-audio-v1: tokenizer {tokenize!r} is unavailable ({first}); "
                                "for ja install mecab-python3 and ipadic: pip install 'sacrebleu[ja]'") from None


class S2ttBleuV1(Recipe):
  __doc__ = __doc__
  metric, version, headline = "s2tt_bleu", "qwen-audio-v1", "bleu"
  fields = {"tgt_lang": "target language code (default: source.split('_')[-2], as evaluate_st.py)"}

  def _sample(self, ref, hyp, fields):
    tgt = fields.get("tgt_lang")
    if not tgt:
      if "source" not in fields:
        raise RecipeError(f"{self.name}: needs tgt_lang= or source= names like 'covost2_en_de_test' "
                          "(target language = split('_')[-2])")
      try:
        tgt = s2tt_languages(fields["source"])[1]
      except PromptError as e:
        raise RecipeError(f"{self.name}: {e}; give tgt_lang= instead") from None
    tokenize = tokenizer_for(tgt)
    hyp_norm = hyp.strip()
    metric = bleu_metric(tokenize, sentence=True)
    return {"tgt_lang": tgt, "tokenize": tokenize, "ref_norm": ref, "hyp_norm": hyp_norm,
            "sentence_bleu": float(metric.sentence_score(hyp_norm, [ref]).score)}

  def _aggregate(self, samples):
    tokenizers = sorted({s["tokenize"] for s in samples})
    if len(tokenizers) > 1:
      return {"bleu": None, "tokenizers": tokenizers,
              "note": "samples need different tokenizers: no pooled BLEU (see per_source)"}, None
    metric = bleu_metric(tokenizers[0])
    out = metric.corpus_score([s["hyp_norm"] for s in samples], [[s["ref_norm"] for s in samples]])
    return {"bleu": float(out.score), "signature": str(metric.get_signature()), "tokenize": tokenizers[0],
            "precisions": [float(p) for p in out.precisions], "bp": float(out.bp), "sys_len": int(out.sys_len),
            "ref_len": int(out.ref_len), "counts": [int(c) for c in out.counts],
            "totals": [int(t) for t in out.totals]}, None

  def impl(self):
    return {"script": "Qwen-Audio eval_audio/evaluate_st.py",
            "bleu": "sacrebleu corpus BLEU, tokenize ja→ja-mecab, zh→zh, else 13a; defaults otherwise",
            "hyp": "stripped decoded output", "sacrebleu": version_of("sacrebleu"),
            "official_sacrebleu": "1.5.1", "mecab-python3": version_of("mecab-python3"),
            "ipadic": version_of("ipadic")}
