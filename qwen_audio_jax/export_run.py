"""A training run -> a PyTorch (HF or openai) checkpoint, in one command.

  python -m qwen_audio_jax.export_run --workdir=DIR [--step=best|latest|N] [--target=hf-qwen-audio] \
      --output=OUT [--dtype=source|float32|bfloat16|float16]

The step defaults to the run's best evaluation, else its latest checkpoint; the target to the run's
model family (hf-qwen-audio / hf-qwen2-audio). A LoRA run is written with its adapters merged (the
adapter alone is WORKDIR/lora_adapter). Same as `conversion/export.py --checkpoint=DIR [--step=...]`;
needs the repository's `conversion/` package (torch), i.e. run it from the repository root.
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="training run directory (or one of its step folders)")
  p.add_argument("--step", default=None, help="best | latest | N (default: best, else latest)")
  p.add_argument("--target", default=None, help="export format (default: from the model family)")
  p.add_argument("--output", required=True, help="output folder (a .pt file for openai-whisper)")
  p.add_argument("--dtype", default="source", choices=["source", "float32", "bfloat16", "float16"])
  p.add_argument("--shard_gb", type=float, default=4.0)
  p.add_argument("--overwrite", action="store_true")
  args = p.parse_args(argv)
  try:
    from conversion import export  # pylint: disable=import-outside-toplevel  (torch: conversion only)
  except ImportError as e:
    print(f"error: export needs the repository's conversion/ package and torch ({e}); run from the "
          "repository root with the [convert] extra installed", file=sys.stderr)
    return 2
  forwarded = [f"--checkpoint={args.workdir}", f"--output={args.output}", f"--dtype={args.dtype}",
               f"--shard_gb={args.shard_gb}"]
  forwarded += [f"--step={args.step}"] if args.step else []
  forwarded += [f"--target={args.target}"] if args.target else []
  forwarded += ["--overwrite"] if args.overwrite else []
  return export.main(forwarded)


if __name__ == "__main__":
  sys.exit(main())
