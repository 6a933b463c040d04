"""CLI: `python -m qwen_audio_jax.evaluate --config=configs/eval/NAME.py[:arg] --workdir=DIR [--config.x=y ...]`.

Scores every checkpoint × dataset of the sweep config (see `qwen_audio_jax/eval/sweep_config.py`) with
the datasets' metric recipes; a re-run skips finished cells and resumes unfinished ones. Writes
results.json / results.md / results.png / manifest.json and per-sample dumps under the workdir.
Bad config or input: one line on stderr, exit 2, before any model work.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Sweep config file (configs/eval/*.py[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep directory: dumps, results; resumes from it.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  from qwen_audio_jax.sharding import distributed  # pylint: disable=import-outside-toplevel
  distributed.initialize("auto")
  from qwen_audio_jax.eval import cell, sweep, sweep_config  # pylint: disable=import-outside-toplevel
  from qwen_audio_jax.infer import errors  # pylint: disable=import-outside-toplevel
  try:
    sweep.run(_CONFIG.value, _WORKDIR.value)
  except (sweep_config.SweepConfigError, cell.TooManyBadSamples, *errors.USER_ERRORS) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
