"""The training loop: set up (mesh, state, data, checkpoints), step, log, evaluate, save, stop.

Resumes automatically from `workdir/checkpoints`. Stops cleanly (checkpoint, exit 0) on SIGTERM at
the next step boundary. Only process 0 writes logs, TensorBoard events and the loss plot.
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
from absl import logging

from qwen_audio_jax.audio import lengths as audio_lengths
from qwen_audio_jax.model import config as model_config
from qwen_audio_jax.model.splice import check_audio_placeholders
from qwen_audio_jax.sharding import mesh as mesh_lib, partition
from qwen_audio_jax.train import (checkpointing, metrics as metrics_lib, model_fns, optimizer as optim_lib,
                                  plot, preemption, specaugment, state as state_lib, step as step_lib, tb)

MODEL_KEYS = ("input_ids", "attention_mask", "targets", "loss_mask", "audio_mel", "audio_lengths")


class MelCropError(ValueError):
  """A clip is longer than the cropped mel window (train.mel_frames)."""


class ConfigMismatchError(ValueError):
  """The data config does not fit the model (tokenizer ids, vocabulary or mel bins)."""


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


def check_host_batch(host: dict, mcfg) -> None:
  """The model's placeholder/audio check on one host batch (numpy, before the jitted step)."""
  if mcfg.family in ("qwen-audio", "qwen2-audio"):
    check_audio_placeholders(host["input_ids"], host["audio_lengths"], mcfg, host["audio_mel"].shape[-1])


def device_batch(host: dict, mel_frames: int) -> dict:
  """The arrays the step needs, with the mel window cropped."""
  out = {k: host[k] for k in MODEL_KEYS if k in host}
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


def _eval_data_config(cfg):
  data = ml_collections.ConfigDict(cfg.data.to_dict())
  data.sources = [dict(s, split=cfg.eval.split) for s in cfg.data.sources]
  return data


@dataclasses.dataclass
class Logs:
  """stdout, metrics.jsonl, TensorBoard; all no-ops off process 0."""

  workdir: str
  tensorboard: bool
  history: list = dataclasses.field(default_factory=list)

  def __post_init__(self):
    self.main = jax.process_index() == 0
    use_tb = self.main and self.tensorboard
    self.writer = tb.ScalarWriter(os.path.join(self.workdir, "tensorboard")) if use_tb else None
    self.jsonl = open(os.path.join(self.workdir, "metrics.jsonl"), "a") if self.main else None
    self.tty = self.main and sys.stderr.isatty()

  def write(self, step: int, values: dict, line: str | None = None):
    if not self.main:
      return
    self.history.append(dict(values, step=step))
    self.jsonl.write(json.dumps(dict(values, step=step)) + "\n")
    self.jsonl.flush()
    if self.writer:
      self.writer.scalars(step, {k: v for k, v in values.items() if isinstance(v, (int, float))})
      self.writer.flush()
    if line:
      print(line, flush=True)

  def progress(self, step: int, total: int, t_start: float, first: int):
    if not self.tty:
      return
    done = (step - first) / max(1, total - first)
    eta = (time.time() - t_start) / max(done, 1e-9) * (1 - done)
    bar = "#" * int(30 * done)
    sys.stderr.write(f"\r[{bar:<30}] {step}/{total} eta {eta:.0f}s")
    sys.stderr.flush()

  def close(self, plot_path: str | None):
    if not self.main:
      return
    if self.tty:
      sys.stderr.write("\n")
    self.jsonl.close()
    if self.writer:
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


def setup(cfg, workdir: str):
  """Everything static about the run: mesh, model, optimizer, plan."""
  mesh = mesh_lib.mesh_from_config(cfg.mesh)
  mcfg = model_fns.resolve_model_config(cfg.model)
  fns = model_fns.build(mcfg)
  total = int(cfg.train.total_steps)
  optimizer = optim_lib.make_optimizer(cfg.optim, total)
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


def _restore_or_init(cfg, plan, ckpt, data, main: bool) -> dict:
  """Latest checkpoint in the workdir (with the data position), else init_params_dir, else random."""
  if ckpt.latest_step() is not None:
    state, data_state = ckpt.restore(plan)
    if data_state is not None:
      data.set_state(data_state)
    if main:
      print(f"resumed from step {int(host_value(state['step']))}", flush=True)
    return state
  params = checkpointing.restore_params_dir(cfg.train.init_params_dir, plan) if cfg.train.init_params_dir else None
  return state_lib.create(plan, int(cfg.train.seed), params)


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
  os.makedirs(workdir, exist_ok=True)
  if cfg.train.compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", cfg.train.compilation_cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  mesh, mcfg, plan, schedule = setup(cfg, workdir)
  main = jax.process_index() == 0
  if main:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump({"config": json.loads(cfg.to_json_best_effort()), "model": model_config.to_dict(mcfg)}, f, indent=1)
    print(f"mesh {mesh_lib.describe(mesh)}; {plan_summary(plan)}", flush=True)
  from qwen_audio_jax.data import config as data_config, pipeline  # pylint: disable=import-outside-toplevel
  check_data_matches_model(data_config.as_config(cfg.data), mcfg)
  data = pipeline.make_train_iterator(cfg.data, global_batch_size=int(cfg.train.batch_size),
                                      seed=int(cfg.train.data_seed), mel_frames=int(cfg.train.mel_frames))
  from qwen_audio_jax.eval import during_training  # pylint: disable=import-outside-toplevel
  gen_eval = during_training.GenerationEval.from_run_config(cfg, workdir)  # checked before any step
  ckpt = checkpointing.Checkpoints(workdir, keep=int(cfg.checkpoint.keep), best_keep=int(cfg.checkpoint.best_keep),
                                   best_metric=str(cfg.eval.best_metric), best_mode=str(cfg.eval.best_mode),
                                   async_save=bool(cfg.checkpoint.async_save))
  stop = preemption.StopSignal()
  try:
    state = _restore_or_init(cfg, plan, ckpt, data, main)
    state, summary = _loop(cfg, workdir, mcfg, plan, schedule, state, data, ckpt, stop, gen_eval)
  except BaseException:
    stop.restore()
    data.close()
    try:  # a failing save must not hide the error that stopped training
      ckpt.close()
    except Exception as e:  # pylint: disable=broad-exception-caught
      logging.error("checkpoint save also failed: %s", e)
    raise
  stop.restore()
  data.close()
  ckpt.close()  # waits for async saves; raises if one failed
  if plan.use_lora:
    lora = checkpointing.gather_to_host(state["lora"])
    if main:
      export_lora(cfg, plan, lora, os.path.join(workdir, "lora_adapter"))
  return summary


def _loop(cfg, workdir, mcfg, plan, schedule, state, data, ckpt, stop, gen_eval=None):
  """Steps from the state's step to train.total_steps (or a stop); returns (state, summary)."""
  mesh, main = plan.mesh, jax.process_index() == 0
  train_step = step_lib.make_train_step(plan, cfg.train, schedule, specaugment.from_config(cfg.train.specaugment))
  eval_step, eval_batches = step_lib.make_eval_step(plan), None
  peak, peak_how = metrics_lib.peak_flops_per_device(override_tflops=float(cfg.log.get("peak_tflops", 0.0)))
  mult = metrics_lib.tower_multipliers(plan.mask, plan.use_lora)
  logs = Logs(workdir, bool(cfg.log.tensorboard), history=_load_history(workdir) if main else [])
  total, first = int(cfg.train.total_steps), int(host_value(state["step"]))
  mel_frames, log_every = int(cfg.train.mel_frames), max(1, int(cfg.log.every_steps))
  every_eval, every_ckpt = int(cfg.eval.every_steps), int(cfg.checkpoint.every_steps)
  summary = {"first_step": first, "peak_flops": peak, "peak_source": peak_how, "compile_s": []}
  compiled, pending, step, stopped = {}, [], first, False
  t_start = t_mark = time.time()
  while step < total:
    host = next(data)
    check_host_batch(host, mcfg)  # every batch: inside jit a mismatch would splice silently
    batch = partition.host_to_global(device_batch(host, mel_frames), mesh)
    shapes = {k: v.shape for k, v in batch.items()}
    key = tuple(sorted(shapes.items()))
    if key not in compiled:  # one compile per sequence bucket, timed apart from the steps
      t0 = time.time()
      with partition.activation_context(mesh):
        compiled[key] = train_step.jitted.lower(state, batch).compile()
      summary["compile_s"].append(time.time() - t0)
      logs.write(step, {"compile_s": time.time() - t0},
                 f"compiled train step for batch {shapes['input_ids']} in {time.time() - t0:.1f}s")
      t_mark = time.time()
    state, m = compiled[key](state, batch)
    step += 1
    pending.append((step, m, shapes))
    if step % log_every == 0 or step == total:
      values = host_value([p[1] for p in pending])
      dt = (time.time() - t_mark) / len(pending)
      for (s, _, shp), v in zip(pending, values):
        rec = {k: float(v[k]) for k in step_lib.METRIC_KEYS}
        rec.update(_throughput(mcfg, rec, shp, dt, peak, mult, int(cfg.train.batch_size)))
        logs.write(s, rec, metrics_lib.format_line(s, total, rec) if s == pending[-1][0] else None)
      pending, t_mark = [], time.time()
    logs.progress(step, total, t_start, first)
    if every_eval and (step % every_eval == 0 or step == total):
      eval_batches = eval_batches or _eval_batches(cfg, mel_frames)
      values = {"eval_loss": _evaluate(plan, eval_step, state, eval_batches)}
      if gen_eval is not None:  # generation + metric recipes (eval.sweep); may choose best/
        values.update(gen_eval.run(step, mcfg, gen_eval.params_of(plan, state), mesh, logs.writer))
      logs.write(step, values, f"eval step {step}: " + " | ".join(f"{k} {v:.4g}" for k, v in values.items()))
      ckpt.save_best(step, state, values)
      t_mark = time.time()
    limit = int(cfg.train.stop_after_steps)
    stopped = stop.should_stop() or bool(limit and step - first >= limit)
    if step % every_ckpt == 0 or step == total or stopped:
      ckpt.save(step, state, data.get_state(), {"model": model_config.to_dict(mcfg)})
      t_mark = time.time()
    if stopped:
      if main:
        print(f"stopping at step {step} (checkpoint saved)", flush=True)
      break
  logs.close(os.path.join(workdir, "loss.png") if cfg.log.plot else None)
  summary.update(last_step=step, stopped=stopped, wall_s=time.time() - t_start)
  return state, summary


def _eval_batches(cfg, mel_frames: int) -> list[dict]:
  from qwen_audio_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  it = pipeline.make_train_iterator(_eval_data_config(cfg), global_batch_size=int(cfg.eval.batch_size), seed=0,
                                    mel_frames=mel_frames)
  try:
    return [device_batch(next(it), mel_frames) for _ in range(int(cfg.eval.batches))]
  finally:
    it.close()


def export_lora(cfg, plan, lora, out_dir: str) -> str:
  """Writes the HF-PEFT adapter of host (numpy) LoRA factors."""
  from qwen_audio_jax.train import peft_export  # pylint: disable=import-outside-toplevel
  return peft_export.export(lora, out_dir, rank=plan.lora_rank, alpha=float(cfg.lora.alpha),
                            naming=cfg.lora.export_naming)
