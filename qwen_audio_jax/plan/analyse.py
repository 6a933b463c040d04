"""Lower + compile one planned step for the target devices and read XLA's memory analysis.

Per-device bytes are XLA's own numbers for the compiled program: arguments, outputs, temporaries,
generated code, and the output bytes that alias (donated) arguments. The total a device needs is
arguments + outputs - aliased + temporaries + code. A TPU compile that runs out of HBM raises
RESOURCE_EXHAUSTED; that is caught and reported as "does not fit" with XLA's "used X of Y".
"""

from __future__ import annotations

import dataclasses
import re
import time

from qwen_audio_jax.plan.steps import PlannedStep
from qwen_audio_jax.sharding import partition

_OOM = re.compile(r"resource_exhausted|ran out of memory|out of memory in memory space", re.IGNORECASE)
_USED = (re.compile(r"Used ([\d.]+)([KMGT]?)i?B? of ([\d.]+)([KMGT]?)i?B? hbm", re.IGNORECASE),
         re.compile(r"required for HLO temporaries \(([\d.]+)([KMGT]?)i?B?\) exceeds available HBM "
                    r"\(([\d.]+)([KMGT]?)i?B?\)", re.IGNORECASE))
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


@dataclasses.dataclass
class Compiled:
  ok: bool  # compiled (False: XLA ran out of memory while compiling)
  compile_s: float
  memory: dict  # bytes per device: argument, output, alias, temp, code, total
  error: str = ""


def memory_dict(analysis) -> dict:
  get = lambda name: int(getattr(analysis, name, 0) or 0)  # pylint: disable=unnecessary-lambda-assignment
  m = dict(argument=get("argument_size_in_bytes"), output=get("output_size_in_bytes"),
           alias=get("alias_size_in_bytes"), temp=get("temp_size_in_bytes"),
           code=get("generated_code_size_in_bytes"))
  m["total"] = m["argument"] + m["output"] - m["alias"] + m["temp"] + m["code"]
  return m


def oom_usage(message: str) -> dict:
  """XLA:TPU's "Used 21.95G of 15.48G hbm" or "HLO temporaries (64.07G) exceeds available HBM (31.75G)"
  → {"oom_needed": bytes, "oom_available": bytes}, when the message has them."""
  for pattern in _USED:
    m = pattern.search(message)
    if m:
      return {"oom_needed": int(float(m.group(1)) * _UNITS[m.group(2).upper()]),
              "oom_available": int(float(m.group(3)) * _UNITS[m.group(4).upper()])}
  return {}


def compile_step(step: PlannedStep, mesh) -> Compiled:
  t0 = time.time()
  try:
    with partition.activation_context(mesh):
      lowered = step.jitted.lower(*step.args)
    compiled = lowered.compile()
  except Exception as e:  # pylint: disable=broad-exception-caught
    text = str(e)
    if not _OOM.search(text):
      raise
    first = next((line for line in text.splitlines() if _OOM.search(line)), text.splitlines()[0])
    return Compiled(False, time.time() - t0, oom_usage(text), first.strip()[:400])
  return Compiled(True, time.time() - t0, memory_dict(compiled.memory_analysis()))
