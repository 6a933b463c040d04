"""CLI: prepare a dataset as TFDS array_record files (no tensorflow needed).

  python -m qwen_audio_jax.data.prepare librispeech --manual_dir /data/librispeech --data_dir /data/tfds
  python -m qwen_audio_jax.data.prepare synthetic --data_dir /data/tfds
Then point a source at it with `data_dir` (see `qwen_audio_jax.data.config`).
"""

from __future__ import annotations

import argparse

from qwen_audio_jax.data.tfds_builders import BUILDERS, prepare


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("name", choices=sorted(BUILDERS))
  parser.add_argument("--data_dir", required=True, help="where the prepared files go")
  parser.add_argument("--manual_dir", default=None, help="the corpus in its published layout")
  args = parser.parse_args(argv)
  builder = prepare(args.name, args.data_dir, args.manual_dir)
  splits = {name: info.num_examples for name, info in builder.info.splits.items()}
  print(f"{args.name}: prepared {splits} under {builder.data_dir}")


if __name__ == "__main__":
  main()
