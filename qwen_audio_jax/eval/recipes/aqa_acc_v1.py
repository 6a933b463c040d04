"""aqa_acc@qwen-audio-v1: the accuracies of Qwen-Audio's `eval_audio/evaluate_aqa.py` (ClothoAQA).

acc: `sklearn.metrics.accuracy_score(refs, hyps)` per `source`, exact case-sensitive match of the
stripped decoded output against the answer. binary_acc ("bi_ACC"): the same over the samples whose
reference is yes or no (`gt.lower() in ["yes", "no"]`); the hyp is still compared case-sensitively.
The script prints bi_ACC only for sources whose name starts with "clotho"; here it is given for every
subset that has yes/no references (None, with n_binary 0, when there are none).
"""

from __future__ import annotations

from qwen_audio_jax.eval.recipes.base import Recipe, version_of
from qwen_audio_jax.eval.recipes.cls_acc_v1 import exact_match_accuracy


def is_binary(ref: str) -> bool:
  return ref.lower() in ("yes", "no")


class AqaAccV1(Recipe):
  __doc__ = __doc__
  metric, version, headline = "aqa_acc", "qwen-audio-v1", "acc"
  fields = {}

  def _sample(self, ref, hyp, fields):
    hyp_norm = hyp.strip()
    return {"ref_norm": ref, "hyp_norm": hyp_norm, "correct": ref == hyp_norm, "binary": is_binary(ref)}

  def _aggregate(self, samples):
    refs, hyps = [s["ref_norm"] for s in samples], [s["hyp_norm"] for s in samples]
    binary = [s for s in samples if s["binary"]]
    bi_acc = (exact_match_accuracy(self.name, [s["ref_norm"] for s in binary], [s["hyp_norm"] for s in binary])
              if binary else None)
    return {"acc": exact_match_accuracy(self.name, refs, hyps), "correct": sum(s["correct"] for s in samples),
            "binary_acc": bi_acc, "n_binary": len(binary),
            "binary_correct": sum(s["correct"] for s in binary)}, None

  def impl(self):
    return {"script": "Qwen-Audio eval_audio/evaluate_aqa.py",
            "acc": "sklearn accuracy_score(refs, stripped hyps): exact case-sensitive match",
            "binary_acc": "same over samples with ref.lower() in (yes, no)",
            "scikit-learn": version_of("scikit-learn")}
