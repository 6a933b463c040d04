"""aac_cider@qwen-audio-v1: the captioning metrics of Qwen-Audio's `eval_audio/evaluate_caption.py`.

The script scores per `source` with the coco-caption code of `audio-captioning/caption-evaluation-tools`
(the Clotho fork): captions PTB-tokenised (Stanford PTBTokenizer, lower-cased, punctuation tokens
dropped), then Bleu(4), METEOR 1.5, ROUGE-L, CIDEr and SPICE, SPIDEr = (CIDEr + SPICE) / 2. Here the
same scorers come from the `pycocoevalcap` 1.2 package: the same coco-caption code (diffed against the
fork: only renames and comments differ) and byte-identical PTBTokenizer / METEOR jars and paraphrase
table (same git blob hashes). Its `Cider` is CIDEr-D: clipped counts, Gaussian length penalty σ = 6,
× 10, IDF from the references of the scored subset.
refs: one str or a list of str per clip (Clotho: 5). hyps: the decoded output, stripped.

Computed: Bleu_1..4, METEOR, ROUGE_L, CIDEr (headline; = CIDEr-D). NOT computed: SPICE and therefore
SPIDEr: SPICE needs the Stanford CoreNLP 3.6.0 jars, which pycocoevalcap does not ship and downloads
on first use (no download is allowed at run time); SPICE is also reported to fail on Java ≥ 17
(aac-metrics issue #1), and our machines have Java 17. The result names what was computed and why not.
Java (8+) must be on PATH: the PTB tokenizer and METEOR are Java programs (jars shipped in the
package, nothing downloaded). Per-sample dumps carry each clip's scores within its source (CIDEr's
IDF depends on the subset, as in the script).
"""

from __future__ import annotations

import contextlib
import io

from qwen_audio_jax.eval.recipes.base import Recipe, RecipeError, check_pairs, require, version_of
from qwen_audio_jax.eval.recipes.ptb import java_or_raise, ptb_tokenize

NOT_COMPUTED = {
    "SPICE": "needs Stanford CoreNLP 3.6.0 jars that pycocoevalcap downloads on first use (no run-time "
             "download allowed); SPICE is also reported to fail on Java >= 17",
    "SPIDEr": "(CIDEr + SPICE) / 2 needs SPICE",
}
BLEU_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4")


def _scorer(recipe: str, module: str, cls: str):
  return getattr(require(recipe, f"pycocoevalcap.{module}", "pycocoevalcap"), cls)


class AacCiderV1(Recipe):
  __doc__ = __doc__
  metric, version, headline = "aac_cider", "qwen-audio-v1", "CIDEr"
  fields = {}
  multi_ref = True

  def _sample(self, ref, hyp, fields):
    refs = [ref] if isinstance(ref, str) else list(ref)
    return {"hyp_norm": hyp.strip(), "_refs": refs}

  def evaluate(self, refs, hyps, **fields):
    check_pairs(self.name, refs, hyps, self.multi_ref)  # bad input is reported before a missing tool
    java_or_raise(self.name, "PTB tokenisation and METEOR")
    self._meteor = None  # one METEOR java process (≈ 10 s to load its tables) for all subsets of this call
    try:
      return super().evaluate(refs, hyps, **fields)
    finally:
      self._meteor = None  # its __del__ ends the java process

  def _meteor_scorer(self):
    if getattr(self, "_meteor", None) is None:
      self._meteor = _scorer(self.name, "meteor.meteor", "Meteor")()
    return self._meteor

  def _aggregate(self, samples):
    n_refs = [len(s["_refs"]) for s in samples]
    flat = [s["hyp_norm"] for s in samples] + [r for s in samples for r in s["_refs"]]
    tokens = ptb_tokenize(self.name, flat)
    res = {i: [tokens[i]] for i in range(len(samples))}
    gts, k = {}, len(samples)
    for i, count in enumerate(n_refs):
      gts[i], k = tokens[k:k + count], k + count
    if any(not any(r.split()) for refs in gts.values() for r in refs):
      raise RecipeError(f"{self.name}: a reference caption is empty after PTB tokenisation")
    scores, items = {}, [{"hyp_tokens": res[i][0], "ref_tokens": gts[i]} for i in range(len(samples))]
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its n-gram statistics
      bleu, bleu_items = _scorer(self.name, "bleu.bleu", "Bleu")(4).compute_score(gts, res)
    for key, value, per in zip(BLEU_KEYS, bleu, bleu_items):
      scores[key] = float(value)
      for item, v in zip(items, per):
        item[key] = float(v)
    for key, scorer in (("METEOR", self._meteor_scorer()), ("ROUGE_L", _scorer(self.name, "rouge.rouge", "Rouge")()),
                        ("CIDEr", _scorer(self.name, "cider.cider", "Cider")())):
      value, per = scorer.compute_score(gts, res)
      scores[key] = float(value)
      for item, v in zip(items, per):
        item[key] = float(v)
    return {"CIDEr": scores.pop("CIDEr"), **scores, "computed": [*BLEU_KEYS, "METEOR", "ROUGE_L", "CIDEr"],
            "not_computed": dict(NOT_COMPUTED)}, items

  def impl(self):
    return {"script": "Qwen-Audio eval_audio/evaluate_caption.py (caption-evaluation-tools coco_caption)",
            "tokenizer": "Stanford PTBTokenizer 3.4.1 -preserveLines -lowerCase, coco punctuation removed",
            "cider": "CIDEr-D (coco-caption Cider: sigma 6, clipping, x10, IDF over the scored subset)",
            "meteor": "meteor-1.5.jar -l en -norm", "pycocoevalcap": version_of("pycocoevalcap"),
            "not_computed": dict(NOT_COMPUTED)}
