"""Audio embeddings from a model checkpoint (torch-free).

  python -m qwen_audio_jax.embed --checkpoint=DIR --audio=FILE --output=OUT.npy [--long_audio=error]

DIR: a converted checkpoint, a training run's WORKDIR (its best evaluation, else its latest state;
`--step=best|latest|N` to choose), or WORKDIR/best/<step>, WORKDIR/checkpoints/<step>.

Front end (load, 16 kHz mono, Whisper log-mel of a 30 s window) + the audio encoder of the checkpoint:
  whisper      -> the Whisper encoder output of the whole window, [1500, d] (n_ctx rows)
  qwen-audio   -> what the LLM receives for this clip: [bos; n projected frames; eos], [n + 2, d_llm]
  qwen2-audio  -> the n projected frames, [n, d_llm] (its audio bos/eos are ordinary tokens)
n = audio tokens of the clip (`audio/lengths.py`). Audio over 30 s follows --long_audio (error |
truncate | chunk); with chunk the windows' rows are concatenated. A clip too short for one audio token
is an error. OUT gets the `.npy` suffix if it lacks one; OUT.json records the clip and the rows of each
window.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from qwen_audio_jax import checkpoint_io
from qwen_audio_jax.audio import AudioError, features_for_clip
from qwen_audio_jax.audio import lengths as audio_lengths
from qwen_audio_jax.audio.long_audio import POLICIES
from qwen_audio_jax.model import Model, ModelConfig
from qwen_audio_jax.model.splice import features_per_audio


def embed_mel(cfg: ModelConfig, params, mel: np.ndarray, encoder_frames: np.ndarray) -> list[np.ndarray]:
  """mel [k, n_mels, 3000] + T per window -> one [rows, d] array per window (see module doc)."""
  if cfg.family == "qwen":
    raise ValueError("embed: a qwen (text-only) checkpoint has no audio encoder")
  lengths = None if cfg.family == "whisper" else jnp.asarray(encoder_frames, jnp.int32)
  encode = jax.jit(functools.partial(Model(cfg).apply, method=Model.encode_audio))
  feats = np.asarray(encode({"params": params}, jnp.asarray(mel), lengths), np.float32)
  if cfg.family == "whisper":
    return list(feats)
  n_tokens = [int(n) for n in features_per_audio(np.asarray(encoder_frames), cfg)]
  out = [f[:n] for f, n in zip(feats, n_tokens)]
  if cfg.audio_bos_eos:
    table = np.asarray(params["audio_bos_eos"]["embedding"], np.float32)
    out = [np.concatenate([table[:1], x, table[1:]], axis=0) for x in out]
  return out


def check_audio_tokens(info, family: str) -> None:
  """Raises AudioError when a window of the clip yields no audio token (nothing to embed or attend)."""
  if family == "whisper":
    return
  for w in info.windows:
    if w.audio_tokens < 1:
      shortest = next(n for n in range(1, audio_lengths.N_SAMPLES) if audio_lengths.audio_tokens(n, family) >= 1)
      raise AudioError(f"{info.source}: {w.duration_s * 1000:.1f} ms of audio"
                       f"{f' (window at {w.offset_s:.0f} s)' if info.n_chunks > 1 else ''} gives no {family} "
                       f"audio token; clips need at least {1000 * shortest / audio_lengths.SAMPLE_RATE:.0f} ms")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="converted checkpoint, run WORKDIR or one of its steps")
  p.add_argument("--step", default=None, help="for a run WORKDIR: best | latest | N (default: best, else latest)")
  p.add_argument("--audio", required=True)
  p.add_argument("--output", required=True, help=".npy file (a .json record is written next to it)")
  p.add_argument("--long_audio", "--policy", dest="long_audio", default="error", choices=list(POLICIES),
                 help="audio over 30 s: error | truncate | chunk (--policy is a deprecated alias)")
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="compute dtype")
  args = p.parse_args(argv)
  try:
    ckpt = checkpoint_io.resolve(args.checkpoint, args.step).check()
    cfg = ckpt.config.replace(dtype=args.dtype)
    if cfg.family == "qwen":
      raise ValueError(f"{args.checkpoint}: a qwen (text-only) checkpoint has no audio encoder")
    mel, info = features_for_clip(args.audio, n_mels=cfg.encoder.n_mels, policy=args.long_audio,
                                  family=cfg.family)
    check_audio_tokens(info, cfg.family)
    windows = embed_mel(cfg, ckpt.load(), np.asarray(mel), np.array([w.encoder_frames for w in info.windows]))
  except (checkpoint_io.CheckpointError, AudioError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  out = np.concatenate(windows, axis=0)
  output = args.output if args.output.endswith(".npy") else args.output + ".npy"  # what np.save writes
  np.save(output, out)
  with open(output[:-4] + ".json", "w") as f:
    json.dump({"checkpoint": ckpt.path, "kind": ckpt.kind, "step": ckpt.step, "family": cfg.family,
               "shape": list(out.shape), "rows_per_window": [int(w.shape[0]) for w in windows],
               "clip": info.as_record(), "tokenizer": ckpt.metadata.get("tokenizer", {})}, f, indent=2)
  print(f"wrote {output}: {cfg.family} embeddings {list(out.shape)} from {info.duration_s:.2f} s of audio"
        + (f" ({ckpt.kind} step {ckpt.step})" if ckpt.step is not None else ""))
  return 0


if __name__ == "__main__":
  sys.exit(main())
