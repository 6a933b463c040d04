"""cls_acc@qwen-audio-v1: the accuracy of Qwen-Audio's scene / emotion / vocal-sound eval scripts.

`evaluate_scene.py` (CochlScene, TUT2017), `evaluate_emotion.py` (MELD) and `evaluate_vocal_sound.py`
(VocalSound) all compute `sklearn.metrics.accuracy_score(refs, hyps)` per `source`: an exact,
case-sensitive string match of the stripped decoded output (special tags kept) against the label.
No other normalisation: "Happy" ≠ "happy", and "neutral<|endoftext|>" would be wrong.
"""

from __future__ import annotations

from qwen_audio_jax.eval.recipes.base import Recipe, require, version_of


def exact_match_accuracy(recipe: str, refs: list[str], hyps: list[str]) -> float:
  metrics = require(recipe, "sklearn.metrics", "scikit-learn")
  return float(metrics.accuracy_score(refs, hyps))


class ClsAccV1(Recipe):
  __doc__ = __doc__
  metric, version, headline = "cls_acc", "qwen-audio-v1", "acc"
  fields = {}

  def _sample(self, ref, hyp, fields):
    hyp_norm = hyp.strip()
    return {"ref_norm": ref, "hyp_norm": hyp_norm, "correct": ref == hyp_norm}

  def _aggregate(self, samples):
    acc = exact_match_accuracy(self.name, [s["ref_norm"] for s in samples], [s["hyp_norm"] for s in samples])
    return {"acc": acc, "correct": sum(s["correct"] for s in samples)}, None

  def impl(self):
    return {"script": "Qwen-Audio eval_audio/evaluate_{scene,emotion,vocal_sound}.py",
            "acc": "sklearn accuracy_score(refs, stripped hyps): exact case-sensitive match",
            "scikit-learn": version_of("scikit-learn")}
