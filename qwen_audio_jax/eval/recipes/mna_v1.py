"""mna@qwen-audio-v1: the note-analysis metrics of Qwen-Audio's `eval_audio/evaluate_note_analysis.py`.

ref and (stripped) hyp are parsed with `prompts.parse_note_analysis` (the script's `get_note_info`:
pitch / velocity = the MIDI number after `<|pitch|>` / `<|velocity|>`, 128 when absent; instrument =
text after `<|instrument|>` up to '<'; sonic = the ', '-separated labels after `<|sonic|>` up to '<',
kept only if one of the 10 NSynth qualities). Per `source`:
  instrument_acc, velocity_acc: sklearn accuracy_score (exact match).
  qualities_map: MultiLabelBinarizer fitted on refs + hyps together (columns = the quality labels that
    occur in either, not always all 10), hyps as 0/1 scores, `average_precision_score(average="macro")`;
    a label that occurs only in hyps is a column with no positive and scores AP 0 (scikit-learn warns;
    its name is listed in labels_without_positives).
  pitch_acc: HEAR Top1Accuracy on one-hot pitches (= exact match of the MIDI numbers).
  pitch_chroma_acc: HEAR ChromaAccuracy as the script calls it: the one-hot index (rank of the pitch
    among the distinct pitches seen in refs + hyps) mod 12, not the MIDI number mod 12. Kept for
    parity; not reported in the paper.
The paper reports qualities MAP 0.4742 and instrument ACC 0.7882 (NSynth test).
"""

from __future__ import annotations

import warnings

import numpy as np

from qwen_audio_jax.eval.recipes.base import Recipe, require, version_of
from qwen_audio_jax.eval.recipes.cls_acc_v1 import exact_match_accuracy
from qwen_audio_jax.prompts import parse_note_analysis

SONIC_LABELS = ("dark", "distortion", "nonlinear_env", "bright", "fast_decay", "long_release", "tempo-synced",
                "reverb", "multiphonic", "percussive")
MISSING = 128  # the script's value for an absent pitch / velocity


def note_info(text: str) -> dict:
  note = parse_note_analysis(text)
  return {"pitch": MISSING if note["pitch"] is None else note["pitch"],
          "velocity": MISSING if note["velocity"] is None else note["velocity"],
          "instrument": note["instrument"], "sonic": [s for s in note["sonic"] if s in SONIC_LABELS]}


def binarise(recipe: str, gt: list, res: list):
  """One MultiLabelBinarizer over gt + res, as the script does; returns (gt rows, res rows, classes)."""
  preprocessing = require(recipe, "sklearn.preprocessing", "scikit-learn")
  binarizer = preprocessing.MultiLabelBinarizer()
  rows = binarizer.fit_transform(gt + res)
  return rows[:len(gt)], rows[len(gt):], list(binarizer.classes_)


def qualities_map(recipe: str, gt: list[list[str]], res: list[list[str]]) -> dict:
  gt_rows, res_rows, labels = binarise(recipe, gt, res)
  if not labels:
    return {"qualities_map": None, "quality_labels": [], "labels_without_positives": []}
  metrics = require(recipe, "sklearn.metrics", "scikit-learn")
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="No positive class found in y_true")
    value = float(metrics.average_precision_score(gt_rows, res_rows, average="macro"))
  empty = [label for label, col in zip(labels, gt_rows.T) if not col.any()]
  return {"qualities_map": value, "quality_labels": labels, "labels_without_positives": empty}


def pitch_scores(recipe: str, gt: list[int], res: list[int]) -> dict:
  gt_rows, res_rows, _ = binarise(recipe, [[p] for p in gt], [[p] for p in res])
  gt_idx, res_idx = np.argmax(gt_rows, axis=1), np.argmax(res_rows, axis=1)
  return {"pitch_acc": float(np.mean(gt_idx == res_idx)),
          "pitch_chroma_acc": float(np.mean(gt_idx % 12 == res_idx % 12))}


class MnaV1(Recipe):
  __doc__ = __doc__
  metric, version, headline = "mna", "qwen-audio-v1", "instrument_acc"
  fields = {}

  def _sample(self, ref, hyp, fields):
    r, h = note_info(ref), note_info(hyp.strip())
    return {"ref_norm": r, "hyp_norm": h, **{f"{k}_correct": r[k] == h[k] for k in ("pitch", "velocity", "instrument")},
            "missing_in_hyp": [k for k in ("pitch", "velocity") if h[k] == MISSING]
                              + [k for k in ("instrument",) if not h[k]]}

  def _aggregate(self, samples):
    refs, hyps = [s["ref_norm"] for s in samples], [s["hyp_norm"] for s in samples]
    col = lambda rows, key: [row[key] for row in rows]  # noqa: E731
    return {"instrument_acc": exact_match_accuracy(self.name, col(refs, "instrument"), col(hyps, "instrument")),
            **qualities_map(self.name, col(refs, "sonic"), col(hyps, "sonic")),
            **pitch_scores(self.name, col(refs, "pitch"), col(hyps, "pitch")),
            "velocity_acc": exact_match_accuracy(self.name, col(refs, "velocity"), col(hyps, "velocity"))}, None

  def impl(self):
    return {"script": "Qwen-Audio eval_audio/evaluate_note_analysis.py",
            "qualities_map": "MultiLabelBinarizer(refs+hyps) + average_precision_score(average='macro')",
            "pitch": "HEAR Top1Accuracy / ChromaAccuracy on MultiLabelBinarizer one-hots (index mod 12)",
            "missing_value": MISSING, "scikit-learn": version_of("scikit-learn")}
