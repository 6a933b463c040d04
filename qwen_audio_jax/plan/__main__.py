"""CLI: `python -m qwen_audio_jax.plan --config=configs/<name>.py --topology=v5p-64 [--num_slices=N]
[--steps=train,prefill] [--mfu=0.4] [--json=OUT] [--config.x=y ...]`.

Compiles the real step(s) of the configuration for the named TPU topology with abstract inputs and
prints per-device memory against the chip's HBM, model FLOPs and the step time at an assumed MFU.
When the train step does not fit, tries the remat policies and grad_accum_steps the config allows.
Exit status: 0 the configuration fits; 3 it does not (a suggestion is printed when one fits);
2 bad input (one line, before compiling).
"""

from __future__ import annotations

import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file (configs/*.py[:arg]).", lock_config=False)
_TOPOLOGY = flags.DEFINE_string("topology", None, "TPU slice type, e.g. v4-32, v5p-64, v5e-16, v6e-64.")
_SLICES = flags.DEFINE_integer("num_slices", 1, "Number of slices (Multislice over DCN).")
_STEPS = flags.DEFINE_list("steps", ["train"], "Steps to compile: train, prefill (see plan/steps.py).")
_MFU = flags.DEFINE_float("mfu", 0.4, "Assumed model FLOPs utilisation for the step time.")
_JSON = flags.DEFINE_string("json", None, "Also write the result as JSON here.")
_BACKEND = flags.DEFINE_enum("backend", "auto", ["auto", "tpu", "cpu"],
                             "auto: a TPU compile when libtpu is installed, else simulated CPU devices.")
_HBM = flags.DEFINE_float("hbm_gib", 0.0, "Override the chip's HBM (GiB) for what-if plans; 0: the table's.")
_SEARCH = flags.DEFINE_bool("search", True, "When the train step does not fit, search remat x grad_accum_steps.")
_GEN_BATCH = flags.DEFINE_integer("gen_batch", 0, "prefill: rows (0: one per data x fsdp device).")
_GEN_PROMPT = flags.DEFINE_integer("gen_prompt_len", 0, "prefill: prompt tokens (0: the longest seq bucket).")
_GEN_NEW = flags.DEFINE_integer("gen_new_tokens", 256, "prefill: KV-cache slots kept for generated tokens.")
flags.mark_flags_as_required(["config", "topology"])

EXIT_BAD_INPUT, EXIT_DOES_NOT_FIT = 2, 3


def _fail(message: str) -> None:
  print(f"plan: {message}", file=sys.stderr, flush=True)
  sys.exit(EXIT_BAD_INPUT)


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.ERROR)
  from qwen_audio_jax.plan import run  # pylint: disable=import-outside-toplevel
  overrides = [a for a in sys.argv[1:] if a.startswith("--config.")]
  config_arg = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--config=")),
                    config_flags.get_config_filename(flags.FLAGS["config"]))
  t0 = time.time()
  try:
    result = run.plan(_CONFIG.value, config_arg, overrides, _TOPOLOGY.value, _SLICES.value,
                      steps=tuple(_STEPS.value), mfu=_MFU.value, backend=_BACKEND.value, hbm_gib=_HBM.value,
                      search=_SEARCH.value, gen=dict(batch=_GEN_BATCH.value, prompt_len=_GEN_PROMPT.value,
                                                     new_tokens=_GEN_NEW.value))
  except run.BAD_INPUT as e:
    _fail(str(e))
  result["wall_s"] = round(time.time() - t0, 1)
  from qwen_audio_jax.plan import report  # pylint: disable=import-outside-toplevel
  print(report.text(result), flush=True)
  print(f"plan took {result['wall_s']:.0f}s", flush=True)
  if _JSON.value:
    report.write_json(_JSON.value, result)
  sys.exit(0 if result["fits"] else EXIT_DOES_NOT_FIT)


if __name__ == "__main__":
  app.run(main)
