"""Evaluation with generation while training: decode a small sweep with the in-memory params, score it
with the metric recipes, and give the loop the figures that choose `best/`.

Run config (`eval` block):
  sweep         a sweep config file[:arg] (`configs/eval/*.py`, path relative to the working directory
                or the repository), e.g. "configs/eval/tiny_synthetic.py:validation"; "" = off
  sweep_limit   samples per dataset (0 = the sweep's own limit)
  best_metric   what `best/` keeps: "eval_loss", "generate/<dataset>/<metric>" (e.g.
                "generate/synthetic_asr/wer") or "generate/mean_score" (see `normalised_score`)
  best_mode     "min" | "max"
  text_samples  generated answers per dataset logged as TensorBoard text (the clips as audio, once)
Every process decodes the same samples on the training mesh (the engine places inputs on the global
mesh and returns replicated outputs); process 0 scores them (some recipes need java), writes
`WORKDIR/generate/<step>/<dataset>.jsonl`, and its figures are broadcast so that every process passes
the same metrics to the (collective) best-checkpoint save.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import numpy as np

from qwen_audio_jax.audio.load import load_audio
from qwen_audio_jax.eval import cell as cell_lib
from qwen_audio_jax.eval import recipes, report
from qwen_audio_jax.eval import sweep_config as config_lib
from qwen_audio_jax.eval.sweep import decode_settings, load_records
from qwen_audio_jax.infer.pipeline import Pipeline
from qwen_audio_jax.sharding import partition

PREFIX = "generate/"
MEAN_SCORE = PREFIX + "mean_score"
# Headline metric → a score in [0, 1], higher is better (for `mean_score`). Seconds of alignment shift
# are scored against half a second; CIDEr-D (0..10) and BLEU (0..100) against their maxima.
_NORMALISED = {"acc": lambda v: v, "instrument_acc": lambda v: v, "wer": lambda v: 1.0 - min(1.0, v),
               "aas": lambda v: 1.0 - min(1.0, v / 0.5), "CIDEr": lambda v: min(1.0, v / 10.0),
               "bleu": lambda v: min(1.0, v / 100.0)}


def normalised_score(key: str, value: float | None) -> float:
  """A headline figure as a [0, 1] score (higher is better); an absent figure scores 0."""
  if key not in _NORMALISED:
    raise config_lib.SweepConfigError(f"config eval.best_metric={MEAN_SCORE}: no normalisation for the "
                                      f"headline metric {key!r} (known: {', '.join(_NORMALISED)})")
  return 0.0 if value is None else float(_NORMALISED[key](float(value)))


def metric_names(datasets: list[dict]) -> list[str]:
  """The scalar names `run` returns, in a fixed order (the same on every process)."""
  return [f"{PREFIX}{d['name']}/{recipes.get(d['recipe']).headline}" for d in datasets] + [MEAN_SCORE]


def check_best_metric(eval_cfg, datasets: list[dict] | None) -> None:
  """best_metric must be a figure the evaluation produces, best_mode min or max (before training)."""
  names = ["eval_loss"] + (metric_names(datasets) if datasets else [])
  if eval_cfg.best_metric not in names:
    raise config_lib.SweepConfigError(f"config eval.best_metric={eval_cfg.best_metric!r} is not computed; "
                                      f"choose one of {', '.join(names)}")
  if eval_cfg.best_mode not in ("min", "max"):
    raise config_lib.SweepConfigError(f"config eval.best_mode={eval_cfg.best_mode!r}: use min or max")


class GenerationEval:
  """Decodes and scores the sweep's datasets for one set of params (see module docstring)."""

  def __init__(self, sweep_cfg, *, family: str, vocab_path: str | None, limit: int, text_samples: int,
               workdir: str):
    self.cfg = sweep_cfg
    self.datasets, _ = config_lib.dataset_list(sweep_cfg)
    for d in self.datasets:
      d["limit"] = int(limit) or d["limit"]
    self.records = {d["name"]: load_records(d) for d in self.datasets}
    self.family, self.vocab_path = family, vocab_path
    self.text_samples, self.workdir = int(text_samples), workdir
    self.names = metric_names(self.datasets)
    self._cache: dict = {}  # compiled decode programs, shared by every evaluation of the run
    self._audio_logged = False
    self._merge = None

  @classmethod
  def from_run_config(cls, cfg, workdir: str) -> "GenerationEval | None":
    """None when `cfg.eval.sweep` is empty; checks the sweep and best_metric before any training."""
    spec = str(cfg.eval.get("sweep", "") or "")
    if not spec:
      check_best_metric(cfg.eval, None)
      return None
    evaluator = cls(config_lib.load(spec), family=cfg.data.family, vocab_path=cfg.data.vocab_path,
                    limit=int(cfg.eval.get("sweep_limit", 0)), text_samples=int(cfg.eval.get("text_samples", 3)),
                    workdir=workdir)
    check_best_metric(cfg.eval, evaluator.datasets)
    return evaluator

  def params_of(self, plan, state) -> Any:
    """The params the model runs with: the state's, or with LoRA the merged ones (sharded as planned)."""
    if not plan.use_lora:
      return state["params"]
    if self._merge is None:  # compiled once per run
      self._merge = jax.jit(lambda s: plan.model_params(plan.trainable(s), plan.frozen(s)),
                            out_shardings=plan.shardings["params"])
    with partition.activation_context(plan.mesh):
      return self._merge(state)

  def pipeline(self, mcfg, params, mesh) -> Pipeline:
    return Pipeline(mcfg, params, tokenizer_family=self.family, vocab_path=self.vocab_path, mesh=mesh,
                    max_batch=int(self.cfg.decode.batch_size), long_audio=self.cfg.long_audio,
                    compile_cache=self._cache)

  def run(self, step: int, mcfg, params, mesh, writer=None) -> dict[str, float]:
    """{"generate/<dataset>/<headline>": value, "generate/mean_score": ..., } for `params` at `step`."""
    t0 = time.time()
    pipe = self.pipeline(mcfg, params, mesh)
    main = jax.process_index() == 0
    values = []
    for d in self.datasets:
      records = self.records[d["name"]]
      rows = cell_lib.decode_rows(pipe, records, range(len(records)), decode_settings(pipe, d, self.cfg.decode))
      values.append(self._score(step, d, rows, records, writer) if main else np.nan)
    values = _broadcast(np.asarray(values, np.float64))
    out = {name: float(v) for name, v in zip(self.names, values)}
    out[MEAN_SCORE] = float(np.mean([normalised_score(n.rsplit("/", 1)[1], None if np.isnan(v) else v)
                                     for n, v in zip(self.names, values)]))
    self._audio_logged = True
    out[PREFIX + "seconds"] = time.time() - t0
    return out

  def _score(self, step: int, dataset: dict, rows: list[dict], records: list[dict], writer) -> float:
    summary, dump = cell_lib.score(dataset, rows, records, float(self.cfg.max_bad_fraction))
    folder = os.path.join(self.workdir, "generate", str(step))
    report.write_atomic(os.path.join(folder, dataset["name"] + ".jsonl"),
                        "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in dump))
    self._log_samples(step, dataset["name"], dump, records, writer)
    value = report.headline(summary)[1]
    return np.nan if value is None else value

  def _log_samples(self, step: int, name: str, dump: list[dict], records: list[dict], writer) -> None:
    text, audio = getattr(writer, "text", None), getattr(writer, "audio", None)
    shown = dump[:self.text_samples]
    if text is not None and shown:
      lines = ["| id | reference | generated |", "|---|---|---|"]
      lines += [f"| {r['id']} | {_cell(r['references'][0])} | {_cell(r['hypothesis'])} |" for r in shown]
      text(step, f"{PREFIX}{name}", "\n".join(lines))
    if audio is not None and not self._audio_logged:
      for r in shown:
        audio(step, f"{PREFIX}{name}/{r['id']}", load_audio(records[r["index"]]["audio"]))


def _cell(text: str) -> str:
  """Markdown-table-safe text (tags shown literally)."""
  return text.replace("|", "\\|").replace("\n", " ") or "(empty)"


def _broadcast(values: np.ndarray) -> np.ndarray:
  if jax.process_count() == 1:
    return values
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return np.asarray(multihost_utils.broadcast_one_to_all(values))
