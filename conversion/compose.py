"""The paper's starting point: an untrained Qwen-Audio checkpoint from Whisper + Qwen-7B (spec §6).

* audio_encoder: the Whisper encoder (openai .pt or transformers folder), with Qwen-Audio's avg-pool
  (pool=True; Whisper's ln_post is re-used after the pool) and v1 padding ("crop").
* decoder: Qwen-7B (its own naming) with the vocabulary grown to `vocab_size` (default 155947, Qwen-Audio's):
  each new row of the embedding (and new column of lm_head) = mean of the existing rows (columns) plus
  Gaussian noise with std 0.01 x the std of the existing entries — new tokens start as "average" tokens.
* audio_projector: kernel ~ N(0, 0.02^2) (Qwen's initializer_range), bias 0.
* audio_bos_eos: rows ~ N(0, 0.02^2).
* mowe (with `weak_paths`, MoWE-Audio): each weak encoder = a Whisper checkpoint's encoder (pooled, v1
  padding; its text decoder is dropped); `mowe/proj_k` kernels ~ N(0, 0.02^2), the data-dependent gate
  kernel ~ N(0, 0.02^2) with bias 0, the data-independent router logits 0 (uniform weights).
All random draws come from numpy's default_rng(seed), in the order above (vocab rows, then projector,
then bos/eos, then the MoWE projections and gate, so adding weak encoders leaves the rest unchanged).
The LLM keeps Qwen-7B's own RMSNorm eps (Qwen-Audio's released config uses 1e-5); the
Whisper text decoder and v1 buffers are dropped (listed in the record).
"""

from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np

from conversion import engine, record
from conversion.convert import fuse_qkv, open_source, pad_vocab, staging_dir
from conversion.errors import ConversionError
from conversion.maps import MAPS, whisper
from qwen_audio_jax import checkpoint_io
from qwen_audio_jax.model.config import DecoderConfig, ModelConfig, MoweConfig, unpadded

INIT_STD = 0.02
NOISE_REL = 0.01


def composed_config(wcfg: ModelConfig, qcfg: ModelConfig, vocab_size: int, dtype: str) -> ModelConfig:
  base = ModelConfig()  # Qwen-Audio's audio ids
  cfg = ModelConfig(family="qwen-audio", encoder=dataclasses.replace(wcfg.encoder, pool=True, padding="crop"),
                    decoder=dataclasses.replace(qcfg.decoder, vocab_size=vocab_size), audio_bos_eos=True,
                    param_dtype=dtype)
  top = max(base.audio_start_id, base.audio_end_id, base.audio_pad_id)
  if vocab_size <= top:
    raise ConversionError(f"--vocab_size={vocab_size} cannot hold the audio ids (largest {top})")
  if vocab_size < qcfg.decoder.vocab_size:
    raise ConversionError(f"--vocab_size={vocab_size} is smaller than Qwen's vocabulary {qcfg.decoder.vocab_size}")
  return cfg


def _grow_rows(table: np.ndarray, n_old: int, rng: np.random.Generator, chunk: int = 1 << 14) -> None:
  """table[n_old:] = mean(table[:n_old]) + noise (in place; float64 statistics over row chunks)."""
  total, sq = np.zeros(table.shape[1], np.float64), 0.0
  for start in range(0, n_old, chunk):
    block = np.asarray(table[start:min(start + chunk, n_old)], np.float64)
    total += block.sum(0)
    sq += float(np.square(block).sum())
  mean = total / n_old
  std = np.sqrt(max(sq / (n_old * table.shape[1]) - float(np.mean(mean ** 2)), 0.0))
  new = mean + NOISE_REL * std * rng.standard_normal((table.shape[0] - n_old, table.shape[1]))
  table[n_old:] = new.astype(table.dtype)


def _whisper_flag(path: str) -> str:
  return "openai-whisper" if os.path.isfile(path) else "hf-whisper"


def _encoder_plan(path: str, cfg: ModelConfig):
  """(flag, source, raw config, plan) mapping a Whisper checkpoint's encoder into `cfg`'s audio_encoder."""
  wflag = _whisper_flag(path)
  wsrc, _, wraw = open_source(wflag, path)
  wmap = MAPS[wflag]  # the Whisper text decoder is not part of Qwen-Audio: carried here, then dropped
  wmap = dataclasses.replace(wmap, carry=wmap.carry + whisper.TEXT_DECODER_TENSORS[wflag])
  return wflag, wsrc, wraw, engine.plan(wsrc, wmap, cfg, checkpoint_io.param_shapes(cfg), wflag)


def _fill_weak(k: int, path: str, cfg: ModelConfig, arrays: dict, filled: set, log) -> dict:
  """Weak encoder k from a Whisper checkpoint into arrays["mowe/weak_k/..."]; returns its source record."""
  one = ModelConfig(family="whisper", encoder=cfg.mowe.weak[k], decoder=None, audio_bos_eos=False,
                    param_dtype=cfg.param_dtype)  # the weak encoder alone
  wflag, wsrc, wraw, plan = _encoder_plan(path, one)
  tmp = engine.allocate(checkpoint_io.param_shapes(one), arrays[f"mowe/proj_{k}/kernel"].dtype, None)
  done: set = set()
  engine.fill(plan, tmp, done, log)
  engine.check_filled(tmp, done)
  for p, value in tmp.items():
    dest = f"mowe/weak_{k}/" + p[len("audio_encoder/"):]
    arrays[dest][...] = value
    filled.add((dest, None))
  return record.source_entry(wflag, wsrc, wraw, plan)


def _weak_encoder_config(path: str):
  _, wcfg, _ = open_source(_whisper_flag(path), path)
  return dataclasses.replace(wcfg.encoder, pool=True, padding="crop")


def compose(whisper_path: str, qwen_path: str, output: str, dtype: str = "float32", seed: int = 0,
            vocab_size: int | None = None, overwrite: bool = False, log=print, vocab_pad_to: int = 1,
            weak_paths=(), mowe_top_k: int = 1, fused_qkv: bool = False) -> str:
  if os.path.exists(output) and not overwrite:
    raise ConversionError(f"--output={output} already exists (pass --overwrite to replace it)")
  wflag = _whisper_flag(whisper_path)
  wsrc, wcfg, wraw = open_source(wflag, whisper_path)
  qsrc, qcfg, qraw = open_source("hf-qwen", qwen_path)
  if fused_qkv:
    qcfg = fuse_qkv(qcfg, "hf-qwen")
  cfg = pad_vocab(composed_config(wcfg, qcfg, vocab_size or DecoderConfig().vocab_size, dtype), vocab_pad_to)
  if weak_paths:
    cfg = cfg.replace(mowe=MoweConfig(weak=tuple(_weak_encoder_config(p) for p in weak_paths), top_k=mowe_top_k))
  try:
    shapes = checkpoint_io.param_shapes(cfg)
  except ValueError as e:
    raise ConversionError(f"--weak: {e}") from None
  base = unpadded(cfg.replace(mowe=None))
  _, _, _, wplan = _encoder_plan(whisper_path, base)
  qplan = engine.plan(qsrc, MAPS["hf-qwen"], qcfg, checkpoint_io.param_shapes(qcfg), "hf-qwen")
  staging = staging_dir(output)
  try:
    arrays = engine.allocate(shapes, engine.DTYPES[dtype], staging)
    filled: set = set()
    engine.fill(wplan, arrays, filled, log)
    engine.fill(qplan, arrays, filled, log)
    rng = np.random.default_rng(seed)
    n_old, n_new = qcfg.decoder.vocab_size, cfg.decoder.vocab_size  # rows from n_new on: zero padding
    _grow_rows(arrays["decoder/embed/embedding"][:n_new], n_old, rng)
    _grow_rows(arrays["decoder/lm_head/kernel"].T[:n_new], n_old, rng)
    d_enc, d_llm = cfg.encoder.d_model, cfg.decoder.d_model
    arrays["audio_projector/kernel"][...] = (INIT_STD * rng.standard_normal((d_enc, d_llm))).astype(arrays[
        "audio_projector/kernel"].dtype)
    arrays["audio_projector/bias"][...] = 0
    arrays["audio_bos_eos/embedding"][...] = (INIT_STD * rng.standard_normal((2, d_llm))).astype(arrays[
        "audio_bos_eos/embedding"].dtype)
    filled |= {("audio_projector/kernel", None), ("audio_projector/bias", None), ("audio_bos_eos/embedding", None)}
    weak_sources = [_fill_weak(k, p, cfg, arrays, filled, log) for k, p in enumerate(weak_paths)]
    for k in range(len(weak_paths)):
      kernel = arrays[f"mowe/proj_{k}/kernel"]
      kernel[...] = (INIT_STD * rng.standard_normal(kernel.shape)).astype(kernel.dtype)
    if weak_paths:
      gate = arrays["mowe/gate/kernel"]
      gate[...] = (INIT_STD * rng.standard_normal(gate.shape)).astype(gate.dtype)
      arrays["mowe/gate/bias"][...] = 0
      arrays["mowe/router_logits"][...] = 0
      filled |= {(p, None) for p in arrays if p.startswith("mowe/") and "/weak_" not in f"/{p}"}
    engine.check_filled(arrays, filled)
    sources = [record.source_entry(wflag, wsrc, wraw, wplan), record.source_entry("hf-qwen", qsrc, qraw, qplan)]
    sources += weak_sources
    for s in sources:  # compose keeps no side tensors
      s["dropped"], s["carried"] = s.pop("carried"), {}
    meta = record.base_record(sources, cfg.family, dtype)
    meta["converter"] = "conversion/convert.py --source=compose"
    meta["compose"] = {"seed": seed, "vocab_size": cfg.decoder.vocab_size, "qwen_vocab_size": n_old,
                       "init": {"new_vocab_rows": f"mean of existing rows + N(0, ({NOISE_REL} * std)^2)",
                                "audio_projector": f"kernel N(0, {INIT_STD}^2), bias 0",
                                "audio_bos_eos": f"N(0, {INIT_STD}^2)"},
                       "weak": list(weak_paths)}
    checkpoint_io.save_model_checkpoint(output, cfg, checkpoint_io.unflatten(arrays), meta, overwrite=overwrite)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  log(f"wrote {output} (qwen-audio: encoder from {wflag}, LLM from hf-qwen, vocab {n_old} -> {cfg.decoder.vocab_size})")
  return output
