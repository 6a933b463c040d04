"""CLI: `python -m qwen_audio_jax.train --config=configs/tiny_synthetic.py --workdir=/tmp/run`.

Any config field can be set with `--config.<path>=<value>`; `--print_config` prints every field of the
resolved config (and the resolved model) and exits without writing anything. Data from the command
line: `--config.data.train_manifest=a.jsonl,b.jsonl --config.data.train_weights=0.7,0.3
--config.data.eval_manifest=dev.jsonl` or `--config.data.corpus=librispeech:/data/LibriSpeech:train-clean-100`;
the model: `--config.model.preset=... --config.model.dtype=bfloat16 --config.model.decoder.n_layers=4`;
the start: `--config.train.init_params_dir=CONVERTED_CHECKPOINT` (or `train.fork_from=OTHER_WORKDIR`).

Exit status: 0 after training or a clean stop (SIGTERM or Ctrl-C: checkpoint at the next step
boundary; a second Ctrl-C stops at once, status 130); 2 with one `error:` line on stderr for a mistake
in the command line, config, data or checkpoints, found before anything is written or compiled; 1 when
training or an (asynchronous) checkpoint save fails.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file (configs/*.py[:arg]); every field "
                                          "can be set with --config.<path>=<value> (see --print_config).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs; resumes from it.")
_PRINT = flags.DEFINE_bool("print_config", False, "Print the resolved config (all fields) and exit.")


def fail(message: str, status: int = 2):
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(status)


def _load(spec: str):
  """The ConfigDict of `--config=PATH[:ARG]` (what config_flags will build), or a one-line failure."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    shipped = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")
    known = sorted(n for n in os.listdir(shipped) if n.endswith(".py")) if os.path.isdir(shipped) else []
    fail(f"--config={spec}: no such file" + (f" (shipped: configs/{', configs/'.join(known)})" if known else ""))
  try:
    module_spec = importlib.util.spec_from_file_location("run_config_check", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None) if arg else module.get_config()
  except Exception as e:  # pylint: disable=broad-exception-caught
    fail(f"--config={spec}: loading the config failed: {type(e).__name__}: {e}")


def _leaves(cfg, prefix: str = "") -> dict[str, object]:
  out = {}
  for key, value in cfg.items():
    if hasattr(value, "items") and not isinstance(value, dict):
      out.update(_leaves(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def check_overrides(argv: list[str]) -> None:
  """Every --config.<path> names a field of the config (else: one line with the nearest names)."""
  specs = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
  specs += [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
  overrides = [a.split("=", 1)[0] for a in argv if a.startswith(("--config.", "--noconfig."))]
  if not specs:
    fail("--config=CONFIG.py[:ARG] is required (e.g. configs/tiny_synthetic.py)")
  leaves = _leaves(_load(specs[-1]))
  for flag in overrides:
    key = flag.split("config.", 1)[1]
    if key in leaves:
      continue
    parts = key.split(".")
    parents = [".".join(parts[:k]) for k in range(1, len(parts))]
    listed = [p for p in parents if isinstance(leaves.get(p), (list, tuple))]
    if listed:
      fail(f"{flag}: config field {listed[0]} is a list and cannot be set piecewise from the command line; "
           "use --config.data.train_manifest=... / --config.data.corpus=... / --config.data.eval_manifest=... "
           "(or a config file)")
    near = difflib.get_close_matches(key, list(leaves), n=3, cutoff=0.6)
    if not near:
      tail = parts[-1]
      near = [k for k in leaves if difflib.get_close_matches(tail, [k.split(".")[-1]], cutoff=0.6)][:3]
    fail(f"{flag}: no config field {key!r}" + (f"; nearest: {', '.join(near)}" if near else "")
         + " (--print_config lists every field)")


def parse_flags(argv: list[str]) -> list[str]:
  """absl parsing, with every command-line mistake reported in one line and exit status 2."""
  if "--help" in argv or "-h" in argv or "--helpfull" in argv:
    return flags.FLAGS(argv)
  check_overrides(argv)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
  except Exception as e:  # pylint: disable=broad-exception-caught  (ml_collections raises plain errors)
    fail(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def _print_config(cfg) -> None:
  from qwen_audio_jax.model import config as model_config  # pylint: disable=import-outside-toplevel
  from qwen_audio_jax.train import model_fns  # pylint: disable=import-outside-toplevel
  print(cfg)
  try:
    print("# resolved model (model.preset + the fields set above):")
    for key, value in model_config.to_dict(model_fns.resolve_model_config(cfg.model)).items():
      print(f"#   {key}: {value}")
  except KeyError as e:
    fail(str(e.args[0]))


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:  # Orbax logs every save at INFO; keep stdout readable
    logging.set_verbosity(logging.WARNING)
  cfg = _CONFIG.value
  if _PRINT.value:
    _print_config(cfg)
    return
  if not _WORKDIR.value:
    fail("--workdir=DIR is required (checkpoints and logs go there; an existing run resumes)")
  from qwen_audio_jax.sharding import distributed  # pylint: disable=import-outside-toplevel
  d = cfg.distributed
  distributed.initialize(
      d.mode, coordinator=d.coordinator or None,
      num_processes=None if int(d.num_processes) < 0 else int(d.num_processes),
      process_id=None if int(d.process_id) < 0 else int(d.process_id),
      timeout_s=int(d.timeout_s), cpu_devices=int(d.cpu_devices) or None,
      heartbeat_timeout_s=int(d.get("heartbeat_timeout_s", 100)))
  from qwen_audio_jax.train import loop  # pylint: disable=import-outside-toplevel  (after distributed init)
  try:
    summary = loop.train(cfg, _WORKDIR.value)  # identity check on every process, then prepare + run
  except loop.USER_ERRORS as e:
    fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
  except KeyboardInterrupt as e:  # before training started, or a second Ctrl-C
    # The loop has closed the data and the checkpoints. Exit directly: CPython remembers a
    # KeyboardInterrupt seen inside C-extension-run code and would otherwise end the process by SIGINT.
    print(f"error: interrupted{' twice' if e.args else ''}: stopped at once, without a checkpoint",
          file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(130)
  if summary.get("stopped"):
    print(f"stopped cleanly at step {summary['last_step']}", flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
