"""Parity report: a converted checkpoint (JAX) against the PyTorch reference of its source.

  python conversion/verify.py --checkpoint=DIR --reference=PATH --source=hf-qwen2-audio [--audio=FILE]

Both sides get the same deterministic inputs: a log-mel of a 30 s window (a seeded synthetic signal, or
--audio) and seeded token ids (with an audio span for audio LLMs). Prints max |Δ| of encoder outputs
and logits, mean/max KL(ref || ours) per position and top-1 agreement (like MaxText's
forward_pass_logit_checker); exits 1 when a threshold is exceeded, 2 on a conversion error.
Everything runs in float32 (`highest` matmul precision) whatever the stored dtype.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from conversion import reference as reference_lib  # noqa: E402
from conversion.errors import ConversionError  # noqa: E402
from qwen_audio_jax import checkpoint_io  # noqa: E402
from qwen_audio_jax.audio import lengths as lengths_lib  # noqa: E402

# stored dtype -> (max |Δ| relative to the reference's largest |value|, max mean KL, min top-1 agreement).
# Measured on the tiny test models: float32 ≤ 8.3e-7 relative, KL ~1e-13; bfloat16 (weights rounded to
# 8 mantissa bits) 0.4-0.9 % relative, KL ≤ 2e-5. 7B models accumulate more rounding over 32 layers, so
# bf16 gets 5 % (a wrong mapping or transform is off by O(100 %)); KL 0.015 as MaxText's logit checker.
THRESHOLDS = {
    "float32": (1e-4, 1e-5, 0.99),
    "bfloat16": (5e-2, 0.015, 0.9),
}
OTHER_DTYPES = THRESHOLDS["bfloat16"]  # float16 and anything else stored below float32


def sample_mel(n_mels: int, audio_path: str | None = None, seconds: float = 30.0,
               seed: int = 0) -> tuple[np.ndarray, int]:
  """([1, n_mels, 3000] log-mel, T encoder frames of the clip) of --audio (first 30 s) or of a seeded
  synthetic signal (a chirp + noise) of `seconds`."""
  from qwen_audio_jax.audio import load_audio, log_mel_spectrogram  # pylint: disable=import-outside-toplevel
  if audio_path:
    wave = load_audio(audio_path)[:lengths_lib.N_SAMPLES]
  else:
    rng = np.random.default_rng(seed)
    t = np.arange(int(min(seconds, lengths_lib.CHUNK_SECONDS) * lengths_lib.SAMPLE_RATE)) / lengths_lib.SAMPLE_RATE
    wave = 0.3 * np.sin(2 * np.pi * (220 + 40 * t) * t) + 0.05 * rng.standard_normal(t.shape)
  frames = int(lengths_lib.encoder_frames(lengths_lib.mel_frames(len(wave))))
  return np.asarray(log_mel_spectrogram(np.asarray(wave, np.float32)[None], n_mels=n_mels), np.float32), frames


def sample_ids(cfg, ref: reference_lib.Reference, seq_len: int, n_audio: int = 0, seed: int = 0) -> np.ndarray:
  """[1, S] seeded text ids; audio LLMs get one span of `n_audio` placeholders (+ v1 tags) inside."""
  rng = np.random.default_rng(seed)
  vocab = (cfg.decoder or cfg.text_decoder).vocab_size
  hi = min(vocab, 151643 if cfg.decoder else 50257)  # ordinary (non-special) ids
  text = lambda n: list(rng.integers(0, hi, size=n))
  if ref.audio_ids is None:
    return np.array([text(seq_len)])
  span = [ref.audio_ids["pad"]] * n_audio
  if "start" in ref.audio_ids:
    span = [ref.audio_ids["start"]] + span + [ref.audio_ids["end"]]
  return np.array([text(4) + span + text(max(seq_len - 4, 1))])


def _log_softmax(x: np.ndarray) -> np.ndarray:
  x = x - np.max(x, axis=-1, keepdims=True)
  return x - np.log(np.sum(np.exp(x), axis=-1, keepdims=True))


def logit_stats(ours: np.ndarray, ref: np.ndarray) -> dict[str, float]:
  """max |Δ|, mean and max KL(ref || ours) over positions, top-1 agreement (float64 math)."""
  ours, ref = ours.astype(np.float64), ref.astype(np.float64)
  log_p, log_q = _log_softmax(ref), _log_softmax(ours)
  kl = np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)
  return {"max_abs": float(np.max(np.abs(ours - ref))), "ref_scale": float(np.max(np.abs(ref))),
          "kl_mean": float(np.mean(kl)), "kl_max": float(np.max(kl)),
          "top1": float(np.mean(np.argmax(ours, -1) == np.argmax(ref, -1)))}


def jax_model(directory: str):
  """(cfg, params) restored in float32 with fp32 compute and highest matmul precision."""
  cfg, params, _ = checkpoint_io.load_model_checkpoint(directory, dtype="float32")
  cfg = cfg.replace(dtype="float32", param_dtype="float32", matmul_precision="highest")
  return cfg, params


def compare(directory: str, ref: reference_lib.Reference, audio_path: str | None = None, seconds: float = 30.0,
            seq_len: int = 16, seed: int = 0) -> dict[str, dict[str, float]]:
  """Runs both sides; returns {"encoder": {...}, "logits": {...}} (whichever the family has).

  Whisper: the encoder output of the whole 30 s window and, with the text decoder, the teacher-forced
  logits of seeded token ids. Audio LLMs: the clip's n projected frames, and the logits of a prompt
  holding the clip.
  """
  from qwen_audio_jax.model import Model, forward, whisper_decode  # pylint: disable=import-outside-toplevel
  from qwen_audio_jax.model.splice import features_per_audio  # pylint: disable=import-outside-toplevel
  cfg, params = jax_model(directory)
  report, mel, frames, n_audio = {}, None, None, 0
  if cfg.family != "qwen":
    mel, frames = sample_mel(cfg.encoder.n_mels, audio_path, seconds, seed)
    lengths = None if cfg.family == "whisper" else np.array([frames])
    n_audio = int(features_per_audio(lengths, cfg)[0]) if lengths is not None else 0
  if ref.encode is not None and mel is not None:
    ours = np.asarray(Model(cfg).apply({"params": params}, mel, lengths, method=Model.encode_audio))[0]
    ours = ours if lengths is None else ours[:n_audio]
    theirs = ref.encode(mel, None if lengths is None else frames)
    if ours.shape != theirs.shape:
      raise ConversionError(f"encoder output shapes differ: ours {ours.shape}, reference {theirs.shape}")
    report["encoder"] = {"max_abs": float(np.max(np.abs(ours - theirs))), "ref_scale": float(np.max(np.abs(theirs)))}
  if ref.logits is not None and cfg.family == "whisper":
    if cfg.text_decoder is not None:  # an older encoder-only conversion has no decoder to compare
      ids = sample_ids(cfg, ref, seq_len, seed=seed)
      ours = np.asarray(whisper_decode.forward_logits(params, cfg, mel, ids))[0]
      report["logits"] = logit_stats(ours, ref.logits(ids, mel, frames))
  elif ref.logits is not None:
    ids = sample_ids(cfg, ref, seq_len, n_audio, seed)
    audio = {} if mel is None else {"audio_mel": mel, "audio_lengths": np.array([frames])}
    ours = np.asarray(forward(params, cfg, ids, **audio))[0]
    report["logits"] = logit_stats(ours, ref.logits(ids, mel, frames))
  return report


def failures(report: dict, rtol: float, max_kl: float, min_top1: float, atol: float | None = None) -> list[str]:
  """What exceeds its threshold; NaN counts as failing (every comparison is written `not (x <= limit)`).
  max |Δ| is checked against `atol` if given, else against rtol × the reference's largest |value|."""
  bad = []
  for k, v in report.items():
    limit = atol if atol is not None else rtol * v["ref_scale"]
    if not v["max_abs"] <= limit:
      bad.append(f"{k} max|Δ| {v['max_abs']:.3e} > {limit:.3e}")
  if "logits" in report:
    lg = report["logits"]
    if not lg["kl_mean"] <= max_kl:
      bad.append(f"mean KL {lg['kl_mean']:.3e} > {max_kl:g}")
    if not lg["top1"] >= min_top1:
      bad.append(f"top-1 agreement {lg['top1']:.3f} < {min_top1:g}")
  return bad


def _finite_positive(text: str) -> float:
  value = float(text)
  if not math.isfinite(value) or value < 0:
    raise argparse.ArgumentTypeError(f"{text}: a tolerance must be a finite number >= 0")
  return value


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="converted checkpoint directory")
  p.add_argument("--reference", required=True, help="the PyTorch source checkpoint (file or folder)")
  p.add_argument("--source", required=True, help="format of --reference (as for convert.py)")
  p.add_argument("--audio", default=None, help="audio file for the mel input (default: synthetic signal)")
  p.add_argument("--seconds", type=float, default=30.0, help="length of the synthetic signal (<= 30)")
  p.add_argument("--seq_len", type=int, default=16, help="text tokens (around the audio span)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--rtol", type=_finite_positive, default=None,
                  help="max |Δ| allowed relative to the reference's largest |value| (default by stored dtype)")
  p.add_argument("--atol", type=_finite_positive, default=None, help="absolute max |Δ| allowed (replaces --rtol)")
  p.add_argument("--max_kl", type=_finite_positive, default=None, help="mean KL(ref||ours) allowed")
  p.add_argument("--min_top1", type=_finite_positive, default=None, help="top-1 agreement required")
  args = p.parse_args(argv)
  jax.config.update("jax_default_matmul_precision", "highest")
  try:
    dtype = checkpoint_io.read_metadata(args.checkpoint).get("dtype", "float32")
    rtol, max_kl, min_top1 = THRESHOLDS.get(dtype, OTHER_DTYPES)
    rtol = args.rtol if args.rtol is not None else rtol
    max_kl = args.max_kl if args.max_kl is not None else max_kl
    min_top1 = args.min_top1 if args.min_top1 is not None else min_top1
    report = compare(args.checkpoint, reference_lib.build(args.source, args.reference), args.audio,
                     args.seconds, args.seq_len, args.seed)
  except (ConversionError, checkpoint_io.CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for part, stats in report.items():
    print(f"{part}: " + ", ".join(f"{k}={v:.3e}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items()))
  bad = failures(report, rtol, max_kl, min_top1, args.atol)
  limit = f"atol {args.atol:g}" if args.atol is not None else f"rtol {rtol:g}"
  print("PARITY FAILED: " + "; ".join(bad) if bad else f"parity OK (dtype {dtype}, {limit}, "
        f"max_kl {max_kl:g}, min_top1 {min_top1:g})")
  return 1 if bad else 0


if __name__ == "__main__":
  sys.exit(main())
