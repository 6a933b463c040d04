"""One plan: build the run (mesh on the target devices, model, optimizer, state plan) exactly as
training does, compile each requested step, and measure it against the chip."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import ml_collections

from qwen_audio_jax.plan import analyse, steps as steps_lib, topology
from qwen_audio_jax.sharding import mesh as mesh_lib
from qwen_audio_jax.train import metrics as metrics_lib


@dataclasses.dataclass(frozen=True)
class Target:
  """Where to compile: the slice(s), the devices standing in for them and their peak."""

  slice: topology.Slice
  devices: list
  backend: str  # "tpu" (libtpu compile-only devices) or "cpu-simulated"
  peak_flops: float  # bf16 peak per chip
  hbm_bytes: int

  def mesh(self, cfg):
    ici, dcn = tuple(cfg.mesh.ici), tuple(cfg.mesh.get("dcn", (1, 1, 1)))
    if self.backend == "tpu":
      return mesh_lib.make_mesh(ici, dcn, self.devices)  # the same call training makes on the pod
    return mesh_lib.make_mesh(topology.slice_mesh_shape(ici, dcn, self.slice), (1, 1, 1), self.devices)


def make_target(sl: topology.Slice, backend: str = "auto", hbm_gib: float = 0.0) -> tuple[Target, str]:
  """(target, a note on how it was obtained); `backend` auto | tpu | cpu."""
  note = ""
  if backend in ("auto", "tpu"):
    if topology.libtpu_available():
      devices = topology.tpu_devices(sl)
      kind = devices[0].device_kind
      return _target(sl, devices, "tpu", kind, hbm_gib), f"libtpu compile for {sl.describe()} ({kind})"
    if backend == "tpu":
      raise topology.TopologyError("--backend=tpu but libtpu is not installed (pip install -e '.[tpu]')")
    note = "libtpu is not installed (pip install -e '.[tpu]'): "
  note += (f"SIMULATED on {sl.chips} CPU devices: memory figures are XLA:CPU's, not the TPU compiler's; "
           "install libtpu for a true TPU compile")
  return _target(sl, topology.cpu_devices(sl), "cpu-simulated", sl.generation.device_kind, hbm_gib), note


def _target(sl, devices, backend, kind, hbm_gib) -> Target:
  peak = dict(metrics_lib.PEAK_FLOPS)
  match = next((v for k, v in metrics_lib.PEAK_FLOPS if k.lower() in kind.lower()), None)
  if match is None:
    match = peak.get(sl.generation.device_kind, float("nan"))
  hbm = int(hbm_gib * topology.GIB) if hbm_gib else sl.hbm_bytes
  return Target(sl, devices, backend, match, hbm)


def with_overrides(cfg, remat: str | None = None, accum: int | None = None):
  """A copy of the run config with another remat policy and/or grad_accum_steps."""
  c = ml_collections.ConfigDict(cfg.to_dict())
  if remat is not None:
    c.model.overrides.remat_policy = remat
  if accum is not None:
    c.train.grad_accum_steps = int(accum)
  return c


def plan_steps(cfg, target: Target, names: Sequence[str], mfu: float, gen: dict) -> dict:
  """{step name: result} for the config on the target; results are plain JSON-able dicts."""
  from qwen_audio_jax.train import loop  # pylint: disable=import-outside-toplevel
  mesh = target.mesh(cfg)
  _, mcfg, plan, schedule = loop.setup(cfg, "", mesh=mesh)
  ctx = steps_lib.Context(cfg, mcfg, plan, schedule, gen)
  out = {"mesh": dict(mesh.shape)}
  for name in names:
    if name not in steps_lib.STEPS:
      raise KeyError(f"--steps: unknown step {name!r}; known: {', '.join(sorted(steps_lib.STEPS))}")
    step = steps_lib.STEPS[name](ctx)
    res = analyse.compile_step(step, mesh)
    total = res.memory.get("total")
    fits = res.ok and total is not None and total <= target.hbm_bytes
    chips = target.slice.chips
    step_s = step.model_flops / (chips * target.peak_flops * mfu)
    out[name] = dict(step.shape, compiled=res.ok, error=res.error, compile_s=round(res.compile_s, 1),
                     memory=res.memory, fits=bool(fits), model_flops=step.model_flops,
                     step_time_s=step_s, tokens_per_s_per_chip=step.shape["tokens"] / step_s / chips)
  return out
