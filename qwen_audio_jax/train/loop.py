"""The training loop: prepare (check everything, write nothing), then step, log, evaluate, save, stop.

`prepare` runs every check of `preflight` before the workdir is touched or anything compiles. Resumes
automatically from `workdir/checkpoints` (the newest checkpoint that reads back). Stops cleanly
(checkpoint, exit 0) on SIGTERM or Ctrl-C at the next step boundary. Only process 0 writes logs,
TensorBoard events, the loss plot and `config.json` (atomically; never for a different model).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm
from absl import logging
from etils import epath

from qwen_audio_jax import checkpoint_io, files
from qwen_audio_jax.audio import lengths as audio_lengths
from qwen_audio_jax.data.records import TASKS
from qwen_audio_jax.eval.sweep_config import SweepConfigError
from qwen_audio_jax.model import config as model_config
from qwen_audio_jax.model.splice import check_audio_placeholders
from qwen_audio_jax.sharding import mesh as mesh_lib, partition
from qwen_audio_jax.train import (checkpointing, metrics as metrics_lib, model_fns, nonfinite,
                                  optimizer as optim_lib, plot, preemption, preflight, run_identity, specaugment,
                                  state as state_lib, step as step_lib, watchdog as watchdog_lib, writers)

MODEL_KEYS = ("input_ids", "attention_mask", "targets", "loss_mask", "audio_mel", "audio_lengths")


class MelCropError(ValueError):
  """A clip is longer than the cropped mel window (train.mel_frames)."""


class ConfigMismatchError(ValueError):
  """The data or mesh config does not fit the model (tokenizer ids, vocabulary, mel bins, vocab rows)."""


# one line, exit 2 (the CLI); SweepConfigError: eval.sweep / eval.best_metric (eval/during_training.py)
USER_ERRORS = preflight.USER_ERRORS + (ConfigMismatchError, MelCropError, SweepConfigError, nonfinite.NonFiniteError)


def check_data_matches_model(data_cfg, mcfg) -> None:
  """data.family / data.vocab_path / data.n_mels must produce what the model reads (one-line error)."""
  if mcfg.family not in ("qwen-audio", "qwen2-audio"):
    return
  from qwen_audio_jax.tokenizer import get_tokenizer  # pylint: disable=import-outside-toplevel
  tok = get_tokenizer(data_cfg.family, data_cfg.vocab_path)
  for name in ("audio_pad_id", "audio_start_id", "audio_end_id"):
    if getattr(tok, name) != getattr(mcfg, name):
      raise ConfigMismatchError(
          f"config data.family={data_cfg.family!r} tokenizer gives {name}={getattr(tok, name)} but the model "
          f"config has {name}={getattr(mcfg, name)}; the data family and the model's audio ids must agree")
  if tok.vocab_size > mcfg.decoder.vocab_size:
    raise ConfigMismatchError(f"config data.vocab_path: tokenizer has {tok.vocab_size} ids but the model's "
                              f"vocab_size={mcfg.decoder.vocab_size} (larger ids would be clamped silently)")
  if int(data_cfg.n_mels) != mcfg.encoder.n_mels:
    raise ConfigMismatchError(f"config data.n_mels={data_cfg.n_mels} but the model's encoder takes "
                              f"n_mels={mcfg.encoder.n_mels}")


def check_vocab_divides_mesh(mcfg, mesh) -> None:
  """With tensor > 1 the vocabulary rows are split over `tensor`: they must divide (pad them with
  decoder.vocab_pad_to; a multiple of 128 x tensor keeps every shard 128-aligned)."""
  tensor = mesh.shape["tensor"]
  if mcfg.decoder is None or tensor == 1 or mcfg.decoder.padded_vocab % tensor == 0:
    return
  dec = mcfg.decoder
  raise ConfigMismatchError(
      f"config mesh: tensor={tensor} does not divide the {dec.padded_vocab} vocabulary rows (vocab_size "
      f"{dec.vocab_size}, decoder.vocab_pad_to={dec.vocab_pad_to}); set --config.model.decoder.vocab_pad_to="
      f"{128 * tensor} (zero rows, masked in the loss; converted checkpoints are re-padded on restore)")


def check_host_batch(host: dict, mcfg) -> None:
  """The model's placeholder/audio check on one host batch (numpy, before the jitted step)."""
  if mcfg.family in ("qwen-audio", "qwen2-audio"):
    check_audio_placeholders(host["input_ids"], host["audio_lengths"], mcfg, host["audio_mel"].shape[-1])


def batch_keys(mcfg) -> tuple[str, ...]:
  """The host batch keys the train step takes (MoWE also takes task ids, for its per-task router usage)."""
  return MODEL_KEYS + (("task_index",) if getattr(mcfg, "mowe", None) is not None else ())


def device_batch(host: dict, mel_frames: int, keys: tuple[str, ...] = MODEL_KEYS) -> dict:
  """The arrays the step needs (`keys`), with the mel window cropped."""
  out = {k: host[k] for k in keys if k in host}
  if mel_frames and "audio_mel" in out:
    longest = 2 * int(np.max(out["audio_lengths"], initial=0))
    if longest > mel_frames:
      raise MelCropError(f"train.mel_frames={mel_frames} but a clip needs {longest} mel frames; raise it "
                         "or set 0 (full 30 s window)")
    out["audio_mel"] = np.ascontiguousarray(out["audio_mel"][..., :mel_frames])
  return out


def host_value(tree):
  """Replicated (or single-device) arrays → numpy, also when not fully addressable (multi-host)."""
  return jax.tree_util.tree_map(lambda x: np.asarray(x.addressable_data(0)), tree)


def plan_summary(plan) -> str:
  from qwen_audio_jax.train import freeze, lora  # pylint: disable=import-outside-toplevel
  tr, fz = freeze.split(plan.abstract["params"], plan.mask)
  text = f"trainable params {freeze.count(tr):,}, frozen {freeze.count(fz):,}"
  if plan.use_lora:
    text += f", LoRA: {lora.describe(plan.abstract['lora'])}"
  return text


def eval_data_config(data_cfg, entries: list[dict]) -> ml_collections.ConfigDict:
  """The data config of the held-out loss: the run's data settings with `entries` as its only sources."""
  data = ml_collections.ConfigDict(data_cfg.to_dict())
  data.train_manifest = data.train_weights = data.corpus = data.eval_manifest = data.eval_corpus = ""
  data.eval_sources = []
  data.sources = [dict(e) for e in entries]
  return data


@dataclasses.dataclass
class Logs:
  """stdout (with a tqdm progress bar on a terminal), metrics.jsonl, TensorBoard; no-ops off process 0."""

  workdir: str
  tensorboard: bool
  history: list = dataclasses.field(default_factory=list)

  def __post_init__(self):
    self.main = jax.process_index() == 0
    logdir = os.path.join(self.workdir, "tensorboard") if self.main and self.tensorboard else None
    self.writer = writers.open_writer(logdir)
    self.jsonl = open(os.path.join(self.workdir, "metrics.jsonl"), "a") if self.main else None
    self.bar = None

  def start_progress(self, first: int, total: int) -> None:
    if self.main:
      self.bar = tqdm.tqdm(total=total, initial=first, unit="step", dynamic_ncols=True, file=sys.stderr,
                           disable=not sys.stderr.isatty(), leave=False)

  def write(self, step: int, values: dict, line: str | None = None, histograms: dict | None = None):
    """Scalars to jsonl + TensorBoard, vectors as TensorBoard histograms, `line` to stdout."""
    if not self.main:
      return
    self.history.append(dict(values, step=step))
    self.jsonl.write(json.dumps(dict(values, step=step)) + "\n")
    self.jsonl.flush()
    self.writer.scalars(step, {k: v for k, v in values.items() if isinstance(v, (int, float))})
    for tag, vector in (histograms or {}).items():
      self.writer.histogram(step, tag, vector)
    self.writer.flush()
    if line:
      if self.bar is not None and not self.bar.disable:
        self.bar.write(line, file=sys.stdout)
      else:
        print(line, flush=True)

  def progress(self, step: int):
    if self.bar is not None:
      self.bar.update(step - self.bar.n)

  def close(self, plot_path: str | None):
    if not self.main:
      return
    if self.bar is not None:
      self.bar.close()
    self.jsonl.close()
    self.writer.close()
    if plot_path:
      train = [h for h in self.history if "loss" in h]
      ev = [h for h in self.history if "eval_loss" in h]
      plot.loss_curve(plot_path, [h["step"] for h in train], [h["loss"] for h in train],
                      [h["step"] for h in ev], [h["eval_loss"] for h in ev])


def _load_history(workdir: str) -> list:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def setup(cfg, workdir: str, mesh=None):
  """Everything static about the run: model, mesh (from the config unless given), optimizer, plan
  (abstract: nothing allocated)."""
  del workdir
  mcfg = model_fns.resolve_model_config(cfg.model)
  mesh = mesh_lib.mesh_from_config(cfg.mesh) if mesh is None else mesh
  fns = model_fns.build(mcfg)
  total = int(cfg.train.total_steps)
  optimizer = optim_lib.make_optimizer(cfg.optim, total)
  check_vocab_divides_mesh(mcfg, mesh)
  plan = state_lib.make_plan(fns, optimizer, mesh, cfg.train, cfg.lora)
  if int(cfg.mesh.min_sharded_bytes) > 0 and mesh.shape["fsdp"] * mesh.shape["tensor"] > 1:
    partition.check_sharded(plan.abstract["params"], plan.shardings["params"], int(cfg.mesh.min_sharded_bytes))
  return mesh, mcfg, plan, optim_lib.learning_rate(cfg.optim, total)


def _evaluate(plan, eval_step, state, batches) -> float:
  total = tokens = 0.0
  for b in batches:
    out = host_value(eval_step(state, partition.host_to_global(b, plan.mesh)))
    total += float(out["loss_sum"])
    tokens += float(out["tokens"])
  return total / max(tokens, 1.0)


@dataclasses.dataclass
class Prepared:
  """A checked run, ready to start: nothing has been written or compiled yet."""

  cfg: Any
  workdir: str
  mesh: Any
  mcfg: model_config.ModelConfig
  plan: state_lib.Plan
  schedule: Any
  data: Any  # the training iterator (manifests read, nothing decoded yet)
  eval_batches: list[dict] | None
  init: checkpoint_io.ModelCheckpoint | None
  resuming: bool
  record: dict  # config.json
  meta: dict  # stored with every checkpoint
  gen_eval: Any = None  # eval/during_training.GenerationEval when eval.sweep is set


def run_meta(cfg, mcfg, plan, init: dict | None) -> dict:
  """What makes a run's checkpoint a model checkpoint (see checkpoint_io): model, tokenizer, LoRA, init."""
  lora = None
  if plan.use_lora:
    lora = {"rank": plan.lora_rank, "alpha": float(cfg.lora.alpha), "scale": plan.lora_scale,
            "targets": list(plan.lora_patterns), "export_naming": str(cfg.lora.export_naming)}
  return {"format": checkpoint_io.RUN_FORMAT, "model": model_config.to_dict(mcfg),
          "tokenizer": {"family": str(cfg.data.family), "vocab_path": cfg.data.vocab_path},
          "lora": lora, "init": init}


def prepare(cfg, workdir: str) -> Prepared:
  """Every check before the run writes anything (raises one of USER_ERRORS, one line each)."""
  preflight.check_numbers(cfg)
  try:
    mesh, mcfg, plan, schedule = setup(cfg, workdir)
  except KeyError as e:  # model preset / fields
    raise preflight.RunConfigError(str(e.args[0])) from None
  preflight.check_mesh_batches(cfg, mesh)
  from qwen_audio_jax.data import config as data_config, pipeline  # pylint: disable=import-outside-toplevel
  data_cfg = data_config.as_config(cfg.data)
  check_data_matches_model(data_cfg, mcfg)
  entries = data_config.source_entries(data_cfg)
  found = data_config.eval_entries(data_cfg, cfg.eval.split) if int(cfg.eval.every_steps) else None
  if int(cfg.eval.every_steps) and found is None:
    raise preflight.RunConfigError(
        f"config eval.every_steps={cfg.eval.every_steps} but there is no evaluation data: set "
        "--config.data.eval_manifest=DEV.jsonl (or data.eval_corpus=NAME:DIR:SPLIT), or "
        "--config.eval.every_steps=0 (evaluation never falls back to the training data)")
  record = {"config": json.loads(cfg.to_json_best_effort()), "model": model_config.to_dict(mcfg),
            "layout": preflight.layout(cfg, entries)}
  resuming, stored = preflight.check_resume(workdir, record, cfg.train.fork_from)
  init = preflight.check_init(cfg, plan, resuming)
  record["init"] = stored.get("init") if resuming else preflight.init_record(init)
  if cfg.train.fork_from and not resuming:
    record["forked_from"] = init.path
  data = pipeline.make_train_iterator(data_cfg, global_batch_size=int(cfg.train.batch_size),
                                      seed=int(cfg.train.data_seed),
                                      mel_frames=int(cfg.train.mel_frames))  # reads the training manifests
  held_out = eval_batches(cfg, data_cfg, found) if found else None
  from qwen_audio_jax.eval import during_training  # pylint: disable=import-outside-toplevel
  gen_eval = during_training.GenerationEval.from_run_config(cfg, workdir)  # sweep and best_metric checked
  if jax.process_index() == 0:
    preflight.warn_large_synthetic(entries, preflight.model_params(mcfg))
  return Prepared(cfg, workdir, mesh, mcfg, plan, schedule, data, held_out, init, resuming, record,
                  run_meta(cfg, mcfg, plan, record["init"]), gen_eval)


def _restore_or_init(p: Prepared, ckpt, main: bool) -> dict:
  """The newest intact checkpoint in the workdir (with the data position), else the init checkpoint,
  else random."""
  if p.resuming:
    state, data_state, step = ckpt.restore_intact(p.plan)
    if data_state is not None:
      p.data.set_state(data_state)
    if main:
      print(f"resumed from step {step}", flush=True)
    return state
  params = None
  if p.init is not None:
    params = checkpointing.load_init(p.init, p.plan, int(p.cfg.train.seed))
    if main:
      print(f"initialised from {p.init.path}", flush=True)
  return state_lib.create(p.plan, int(p.cfg.train.seed), params)


def _throughput(mcfg, m: dict, shapes: dict, dt: float, peak: float, mult, examples: int) -> dict:
  """Rates over the global batch from the step's own counts (exact on any number of hosts)."""
  frame_s = 2 * audio_lengths.HOP_LENGTH / audio_lengths.SAMPLE_RATE  # one encoder frame
  rows, frames = shapes.get("audio_mel", (0, 0, 0))[0], shapes.get("audio_mel", (0, 0, 0))[-1]
  flops = metrics_lib.step_flops(mcfg, m["input_tokens"], shapes["input_ids"][1], rows, frames, mult)
  per_dev = flops / dt / jax.device_count()
  return {"step_time": dt, "examples_per_s": examples / dt, "audio_s_per_s": m["audio_frames"] * frame_s / dt,
          "tokens_per_s": m["input_tokens"] / dt, "tflops_per_device": per_dev / 1e12, "mfu": per_dev / peak}


def train(cfg, workdir: str) -> dict[str, Any]:
  """Runs (or resumes) training; returns a summary. Raises on any failure (incl. async saves)."""
  config_hash, code_hash = run_identity.check_same_everywhere(cfg, workdir)  # every process, before compiling
  return run(prepare(cfg, workdir), {"config_hash": config_hash, "code_hash": code_hash})


def run(p: Prepared, identity: dict | None = None) -> dict[str, Any]:
  """Creates the workdir, writes config.json, then restores or initialises and trains."""
  cfg, workdir, plan = p.cfg, p.workdir, p.plan
  main = jax.process_index() == 0
  if cfg.train.compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", cfg.train.compilation_cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  created = not epath.Path(workdir).exists()
  if main:
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    files.write_json_atomic(os.path.join(workdir, checkpoint_io.RUN_CONFIG), {**p.record, **(identity or {})})
    print(f"mesh {mesh_lib.describe(p.mesh)}; {plan_summary(plan)}", flush=True)
  ckpt = checkpointing.Checkpoints(workdir, keep=int(cfg.checkpoint.keep), best_keep=int(cfg.checkpoint.best_keep),
                                   best_metric=str(cfg.eval.best_metric), best_mode=str(cfg.eval.best_mode),
                                   async_save=bool(cfg.checkpoint.async_save))
  stop = preemption.StopSignal()
  watchdog = watchdog_lib.from_config(cfg.get("watchdog"))
  try:
    state = _restore_or_init(p, ckpt, main)
    state, summary = _loop(p, state, ckpt, stop, watchdog)
  except BaseException as error:
    watchdog.close()
    stop.restore()
    p.data.close()
    try:  # a failing save must not hide the error that stopped training
      ckpt.close()
    except Exception as e:  # pylint: disable=broad-exception-caught
      logging.error("checkpoint save also failed: %s", e)
    if created and main and isinstance(error, USER_ERRORS) and not checkpoint_io.run_steps(workdir, "checkpoints"):
      epath.Path(workdir).rmtree()  # a new run stopped by its data at step 1: leave nothing behind
    raise
  watchdog.close()
  stop.restore()
  p.data.close()
  ckpt.close()  # waits for async saves; raises if one failed
  if plan.use_lora:
    lora = checkpointing.gather_to_host(state["lora"])
    if main:
      export_lora(cfg, plan, lora, os.path.join(workdir, "lora_adapter"))
  return summary


def check_first_batch(host: dict, data) -> None:
  """Stops at step 1 when the data gives nothing to learn from (instead of training at loss 0)."""
  counts = np.array([np.sum(host["example_mask"]), host["example_mask"].size, np.sum(host["loss_mask"])], np.int64)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    counts = np.sum(multihost_utils.process_allgather(counts).reshape(-1, 3), axis=0)
  rows, size, tokens = (int(c) for c in counts)
  if rows == 0:
    last = data.metrics().get("last_bad") or "?"
    raise preflight.DataError(f"data: all {size} examples of the first batch were rejected; last: {last}")
  if tokens == 0:
    raise preflight.DataError(f"data: the first batch ({rows} examples) has no answer tokens (empty loss "
                              "mask): the records' answers ('text'/'gt') are empty or cut off by data.seq_buckets")


def _loop(p: Prepared, state, ckpt, stop, watchdog):
  """Steps from the state's step to train.total_steps (or a stop); returns (state, summary)."""
  cfg, workdir, mcfg, plan, schedule, data = p.cfg, p.workdir, p.mcfg, p.plan, p.schedule, p.data
  mesh, main = plan.mesh, jax.process_index() == 0
  train_step = step_lib.make_train_step(plan, cfg.train, schedule, specaugment.from_config(cfg.train.specaugment))
  eval_step = step_lib.make_eval_step(plan)
  peak, peak_how = metrics_lib.peak_flops_per_device(override_tflops=float(cfg.log.get("peak_tflops", 0.0)))
  mult = metrics_lib.tower_multipliers(plan.mask, plan.use_lora)
  logs = Logs(workdir, bool(cfg.log.tensorboard), history=_load_history(workdir) if main else [])
  total, first = int(cfg.train.total_steps), int(host_value(state["step"]))
  mel_frames, log_every = int(cfg.train.mel_frames), max(1, int(cfg.log.every_steps))
  keys = batch_keys(mcfg)
  every_eval, every_ckpt = int(cfg.eval.every_steps), int(cfg.checkpoint.every_steps)
  summary = {"first_step": first, "peak_flops": peak, "peak_source": peak_how, "compile_s": []}
  guard = nonfinite.Guard.from_config(cfg.train)
  compiled, pending, step, stopped = {}, [], first, False
  t_start = t_mark = time.time()
  logs.start_progress(first, total)
  while step < total:
    host = next(data)
    if step == first:
      check_first_batch(host, data)
    check_host_batch(host, mcfg)  # every batch: inside jit a mismatch would splice silently
    batch = partition.host_to_global(device_batch(host, mel_frames, keys), mesh)
    shapes = {k: v.shape for k, v in batch.items()}
    key = tuple(sorted(shapes.items()))
    if key not in compiled:  # one compile per sequence bucket, timed apart from the steps
      t0 = time.time()
      with partition.activation_context(mesh), watchdog.phase("compile", timed=False):
        compiled[key] = train_step.jitted.lower(state, batch).compile()
      summary["compile_s"].append(time.time() - t0)
      logs.write(step, {"compile_s": time.time() - t0},
                 f"compiled train step for batch {shapes['input_ids']} in {time.time() - t0:.1f}s")
      t_mark = time.time()
    stop.check_abort()
    state, m = compiled[key](state, batch)
    step += 1
    watchdog.dispatched(step)
    pending.append((step, m, shapes, getattr(data, "last_example_ids", None)))
    if step % log_every == 0 or step == total:
      values = host_value([p[1] for p in pending])
      by_task = metrics_lib.task_usage(values, TASKS)  # summed over the window
      dt = (time.time() - t_mark) / len(pending)
      watchdog.completed(len(pending), dt)
      for (s, _, shp, ids), v in zip(pending, values):
        rec = {k: float(x) for k, x in v.items() if np.ndim(x) == 0}
        guard.observe(s, rec, ids)
        hist = {k: np.asarray(x) for k, x in v.items() if np.ndim(x) > 0}
        rec.update(_throughput(mcfg, rec, shp, dt, peak, mult, int(cfg.train.batch_size)))
        last = s == pending[-1][0]  # the window's line and its per-task router usage go with its last step
        rec.update(by_task if last else {})
        logs.write(s, rec, metrics_lib.format_line(s, total, rec) if last else None, hist)
      pending, t_mark = [], time.time()
    logs.progress(step)
    if every_eval and (step % every_eval == 0 or step == total):
      with watchdog.phase("eval"):
        values = {"eval_loss": _evaluate(plan, eval_step, state, p.eval_batches)}
        if p.gen_eval is not None:  # generation + metric recipes (eval.sweep); may choose best/
          values.update(p.gen_eval.run(step, mcfg, p.gen_eval.params_of(plan, state), mesh, logs.writer))
      logs.write(step, values, f"eval step {step}: " + " | ".join(f"{k} {v:.4g}" for k, v in values.items()))
      with watchdog.phase("checkpoint"):
        ckpt.save_best(step, state, values, p.meta)
      t_mark = time.time()
    limit = int(cfg.train.stop_after_steps)
    stop.check_abort()
    stopped = stop.should_stop() or bool(limit and step - first >= limit)
    if step % every_ckpt == 0 or step == total or stopped:
      with watchdog.phase("checkpoint"):
        ckpt.save(step, state, data.get_state(), p.meta)
      t_mark = time.time()
    if stopped:
      if main:
        print(f"stopping at step {step} (checkpoint saved)", flush=True)
      break
  logs.close(os.path.join(workdir, "loss.png") if cfg.log.plot else None)
  summary.update(last_step=step, stopped=stopped, wall_s=time.time() - t_start, nonfinite_steps=guard.total)
  return state, summary


def eval_batches(cfg, data_cfg, entries: list[dict]) -> list[dict]:
  """The fixed held-out batches (eval.batches x eval.batch_size examples of `entries`, seed 0)."""
  from qwen_audio_jax.data import config as data_config, pipeline  # pylint: disable=import-outside-toplevel
  eval_data = data_config.as_config(eval_data_config(data_cfg, entries))
  it = pipeline.make_train_iterator(eval_data, global_batch_size=int(cfg.eval.batch_size), seed=0,
                                    mel_frames=int(cfg.train.mel_frames))
  try:
    host = [next(it) for _ in range(int(cfg.eval.batches))]
    tokens = sum(int(np.sum(b["loss_mask"])) for b in host)
    if tokens == 0:
      last = it.metrics().get("last_bad") or "no answer tokens"
      raise preflight.DataError(f"eval data: no usable example in {len(host)} batch(es); last: {last}")
    return [device_batch(b, int(cfg.train.mel_frames)) for b in host]
  finally:
    it.close()


def export_lora(cfg, plan, lora, out_dir: str) -> str:
  """Writes the HF-PEFT adapter of host (numpy) LoRA factors."""
  from qwen_audio_jax.train import peft_export  # pylint: disable=import-outside-toplevel
  return peft_export.export(lora, out_dir, rank=plan.lora_rank, alpha=float(cfg.lora.alpha),
                            naming=cfg.lora.export_naming, vocab_size=plan.fns.cfg.decoder.vocab_size)
