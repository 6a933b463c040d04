"""CLI: `python -m qwen_audio_jax.train --config=configs/tiny_synthetic.py --workdir=/tmp/run`.

Any config field can be overridden with `--config.<path>=<value>`. The process exits non-zero when
training or any (asynchronous) checkpoint save fails, and 0 after a clean stop on SIGTERM.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file (configs/*.py[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs; resumes from it.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:  # Orbax logs every save at INFO; keep stdout readable
    logging.set_verbosity(logging.WARNING)
  cfg = _CONFIG.value
  from qwen_audio_jax.sharding import distributed  # pylint: disable=import-outside-toplevel
  d = cfg.distributed
  distributed.initialize(
      d.mode, coordinator=d.coordinator or None,
      num_processes=None if int(d.num_processes) < 0 else int(d.num_processes),
      process_id=None if int(d.process_id) < 0 else int(d.process_id),
      timeout_s=int(d.timeout_s), cpu_devices=int(d.cpu_devices) or None)
  from qwen_audio_jax.train import loop  # pylint: disable=import-outside-toplevel  (after distributed init)
  summary = loop.train(cfg, _WORKDIR.value)
  if summary.get("stopped"):
    print(f"stopped cleanly at step {summary['last_step']}", flush=True)


if __name__ == "__main__":
  app.run(main)
