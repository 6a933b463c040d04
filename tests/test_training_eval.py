"""Evaluation with generation during training: figures, dumps and TensorBoard samples of one evaluation,
best/ chosen by the configured generation metric (not the loss), and the run read back as its best
checkpoint (by that metric) that generates with its own vocabulary."""

import json
import os
import runpy

import ml_collections
import numpy as np
import pytest

from qwen_audio_jax import checkpoint_io
from qwen_audio_jax.eval import cell, during_training, sweep_config
from qwen_audio_jax.eval.during_training import GenerationEval, normalised_score

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny_synthetic.py")


def _sweep(limit=2) -> ml_collections.ConfigDict:
  c = sweep_config.base_config()
  c.datasets = [dict(name="asr", task="asr", recipe="asr_wer@qwen-audio-v1", fields={"lang": "en"},
                     source=dict(name="synthetic", split="validation", tasks=["asr"], size=limit)),
                dict(name="asc", task="asc", recipe="cls_acc@qwen-audio-v1",
                     source=dict(name="synthetic", split="validation", tasks=["asc"], size=limit))]
  return c


class FakeWriter:
  def __init__(self):
    self.texts, self.audios = [], []

  def text(self, step, tag, text):
    self.texts.append((step, tag, text))

  def audio(self, step, tag, wave, sample_rate=16000):
    self.audios.append((step, tag, np.asarray(wave)))


def test_normalised_scores_and_bad_best_metric_are_one_line():
  assert normalised_score("acc", 0.8) == 0.8 and normalised_score("wer", 0.25) == 0.75
  assert normalised_score("wer", 1.7) == 0.0 and normalised_score("aas", 0.1) == pytest.approx(0.8)
  assert normalised_score("CIDEr", 5.0) == 0.5 and normalised_score("acc", None) == 0.0
  with pytest.raises(sweep_config.SweepConfigError, match="no normalisation for the headline metric 'meteor'"):
    normalised_score("meteor", 0.3)
  datasets, _ = sweep_config.dataset_list(_sweep())
  eval_cfg = ml_collections.ConfigDict(dict(best_metric="generate/asr/acc", best_mode="min"))
  with pytest.raises(sweep_config.SweepConfigError, match=r"best_metric='generate/asr/acc' is not computed; .*"
                     r"generate/asr/wer, generate/asc/acc, generate/mean_score"):
    during_training.check_best_metric(eval_cfg, datasets)
  eval_cfg.best_metric, eval_cfg.best_mode = "generate/asr/wer", "lowest"
  with pytest.raises(sweep_config.SweepConfigError, match="best_mode='lowest': use min or max"):
    during_training.check_best_metric(eval_cfg, datasets)
  with pytest.raises(sweep_config.SweepConfigError, match="sweep config file 'configs/eval/nope.py' not found"):
    sweep_config.load("configs/eval/nope.py:validation")


def test_one_evaluation_scores_dumps_and_logs_samples(tmp_path, monkeypatch):
  evaluator = GenerationEval(_sweep(limit=3), family="qwen-audio", vocab_path=None, limit=0, text_samples=2,
                             workdir=str(tmp_path))
  answers = {"asr": lambda r: r["text"] if r["id"].endswith("-0") else "", "asc": lambda r: "pink"}

  def decode_rows(pipe, records, indices, settings):  # canned answers instead of a model
    del pipe, settings
    return [{"index": i, "id": records[i]["id"], "source": records[i]["source"], "prompt": "",
             "references": cell.references(records[i]), "hypothesis": answers[records[i]["task"]](records[i]),
             "ids": [], "finish_reason": "stop", "error": None} for i in indices]

  monkeypatch.setattr(cell, "decode_rows", decode_rows)
  monkeypatch.setattr(GenerationEval, "pipeline", lambda self, mcfg, params, mesh: None)
  monkeypatch.setattr(during_training, "decode_settings", lambda pipe, dataset, decode: None)
  writer = FakeWriter()
  out = evaluator.run(7, None, None, None, writer)
  asr_refs = [r["text"] for r in evaluator.records["asr"]]
  want_wer = sum(len(t.split()) for t in asr_refs[1:]) / sum(len(t.split()) for t in asr_refs)
  want_acc = np.mean([r["text"] == "pink" for r in evaluator.records["asc"]])
  assert out["generate/asr/wer"] == pytest.approx(want_wer) and out["generate/asc/acc"] == pytest.approx(want_acc)
  assert out["generate/mean_score"] == pytest.approx(((1 - want_wer) + want_acc) / 2)
  assert list(out)[:3] == during_training.metric_names(evaluator.datasets) and out["generate/seconds"] >= 0
  with open(tmp_path / "generate" / "7" / "asr.jsonl") as f:
    dump = [json.loads(line) for line in f]
  assert [d["hypothesis"] for d in dump] == [asr_refs[0], "", ""] and dump[1]["metrics"]["errors"] > 0
  assert [t[1] for t in writer.texts] == ["generate/asr", "generate/asc"]
  assert asr_refs[0] in writer.texts[0][2] and asr_refs[2] not in writer.texts[0][2]  # text_samples=2
  assert [a[1] for a in writer.audios] == ["generate/asr/asr-validation-0", "generate/asr/asr-validation-1",
                                           "generate/asc/asc-validation-0", "generate/asc/asc-validation-1"]
  assert all(len(a[2]) >= 8000 for a in writer.audios)
  evaluator.run(8, None, None, None, writer)
  assert len(writer.texts) == 4 and len(writer.audios) == 4  # text every evaluation, the clips once


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """6 tiny steps evaluated at 2, 4 and 6; the (scripted) generation figures rank 2 > 6 > 4 while the
  held-out loss falls: the loss alone would keep 4 and 6."""
  from qwen_audio_jax.train import loop  # pylint: disable=import-outside-toplevel
  cfg = runpy.run_path(TINY)["get_config"]("6")
  cfg.train.batch_size, cfg.eval.batch_size, cfg.eval.batches, cfg.eval.every_steps = 4, 4, 1, 2
  cfg.checkpoint.every_steps, cfg.checkpoint.async_save, cfg.checkpoint.best_keep, cfg.log.every_steps = 2, False, 2, 1
  cfg.data.seq_buckets = (80,)
  scores = iter([0.9, 0.1, 0.5])

  class Scripted:
    def params_of(self, plan, state):
      return state["params"]

    def run(self, step, mcfg, params, mesh, writer=None):
      return {"generate/asr/wer": 0.5, "generate/mean_score": next(scores)}

  workdir = str(tmp_path_factory.mktemp("run") / "w")
  original = GenerationEval.from_run_config
  GenerationEval.from_run_config = classmethod(lambda cls, c, w: Scripted())
  try:
    loop.train(cfg, workdir)
  finally:
    GenerationEval.from_run_config = original
  return workdir


def test_best_is_chosen_by_the_generation_metric_not_the_loss(run_dir):
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    evals = [json.loads(line) for line in f if "eval_loss" in line]
  assert [e["step"] for e in evals] == [2, 4, 6] and [e["generate/mean_score"] for e in evals] == [0.9, 0.1, 0.5]
  losses = [e["eval_loss"] for e in evals]
  assert losses[0] > losses[1] and losses[0] > losses[2]  # by the loss, step 2 would be dropped
  assert sorted(os.listdir(os.path.join(run_dir, "best")), key=int) == ["2", "6"]  # the two highest scores
  assert checkpoint_io.best_rule(run_dir) == ("generate/mean_score", "max")
  assert checkpoint_io.best_run_step(run_dir) == 2


def test_the_run_reads_as_its_best_checkpoint_and_generates(run_dir, tmp_path):
  from qwen_audio_jax.data import synthetic  # pylint: disable=import-outside-toplevel
  from qwen_audio_jax.infer import Pipeline  # pylint: disable=import-outside-toplevel
  model = checkpoint_io.resolve(run_dir)
  assert (model.kind, model.step) == ("run-best", 2)
  assert model.metadata["tokenizer"]["vocab_path"].endswith("synthetic_spm.model")
  pipe = Pipeline.from_checkpoint(run_dir, max_batch=2)
  assert pipe.tokenizer.vocab_size == 4038
  leaf = "decoder/lm_head/kernel"
  two, six = (checkpoint_io.read_params(os.path.join(run_dir, "best", s), [leaf])[leaf] for s in ("2", "6"))
  loaded = pipe._params() if callable(pipe._params) else pipe._params  # pylint: disable=protected-access
  assert not np.array_equal(two, six)
  np.testing.assert_array_equal(np.asarray(checkpoint_io.flatten(loaded)[leaf]), two)  # step 2's params
  wave = synthetic.generate("asc", 0, split="test")["audio"]
  path = tmp_path / "clip.wav"
  path.write_bytes(wave)
  [result] = pipe.generate([str(path)], task="asc", max_new_tokens=4)
  assert result.finish_reason in ("stop", "length") and isinstance(result.text, str)
