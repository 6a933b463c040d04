"""`plan(...)`: the whole plan of one configuration on one topology, as a JSON-able dict."""

from __future__ import annotations

from typing import Sequence

from qwen_audio_jax.plan import core, inputs, search as search_lib, topology
from qwen_audio_jax.sharding import mesh as mesh_lib, partition
from qwen_audio_jax.train import run_identity

TIGHT = 0.95  # a plan above this share of HBM gets a warning

BAD_INPUT = (topology.TopologyError, inputs.PlanInputError, mesh_lib.MeshConfigError, partition.ShardingError,
             KeyError, ValueError)


def plan(cfg, config_path: str, overrides: Sequence[str], topology_name: str, num_slices: int = 1,
         steps: Sequence[str] = ("train",), mfu: float = 0.4, backend: str = "auto", hbm_gib: float = 0.0,
         search: bool = True, gen: dict | None = None, log=print) -> dict:
  if not 0 < mfu <= 1:
    raise ValueError(f"--mfu={mfu}: must be in (0, 1]")
  sl = topology.parse(topology_name, num_slices)
  target, how = core.make_target(sl, backend, hbm_gib)
  log(("plan: " if target.backend == "tpu" else "plan: WARNING: ") + how, flush=True)
  gen = _gen_sizes(cfg, target, dict(gen or {}))
  result = dict(config=config_path, overrides=list(overrides), config_hash=run_identity.config_digest(cfg),
                mfu=mfu, target=dict(topology=sl.name, num_slices=sl.num_slices, chips=sl.chips,
                                     describe=sl.describe(), backend=target.backend, how=how,
                                     hbm_bytes=target.hbm_bytes, peak_flops=target.peak_flops))
  out = core.plan_steps(cfg, target, steps, mfu, gen)
  result["mesh"] = out.pop("mesh")
  result["steps"] = out
  fits = all(r["fits"] for r in out.values())
  result["fits"] = fits
  result["verdict"] = "FITS: every planned step fits in HBM" if fits else _not_fit_line(out)
  tight = [n for n, r in out.items() if r["fits"] and r["memory"]["total"] > TIGHT * target.hbm_bytes]
  if tight:
    result["verdict"] += (f"\nTIGHT: {', '.join(tight)} above {TIGHT:.0%} of HBM; fragmentation or a larger "
                          "bucket may not fit on the chip: leave headroom")
  if not fits and search and "train" in out and not out["train"]["fits"]:
    result["search"] = _search(cfg, target, mfu, gen, out["train"], result["mesh"], log)
    best = result["search"]["best"]
    if best:
      result["verdict"] += (f"\nSUGGESTION: --config.model.overrides.remat_policy={best['remat']} "
                            f"--config.train.grad_accum_steps={best['grad_accum_steps']} fits "
                            f"({best['memory']['total'] / 2**30:.2f} GiB per device, "
                            f"{best['step_time_s']:.2f} s per step at {mfu:.0%} MFU)")
    else:
      result["verdict"] += ("\nno remat policy / grad_accum_steps fits: use a larger topology, a smaller batch "
                            "or freeze more of the model")
  return result


def _not_fit_line(out: dict) -> str:
  bad = [f"{n} ({r['memory']['total'] / 2**30:.2f} GiB per device)" if r["memory"].get("total")
         else f"{n} (XLA ran out of memory while compiling{_oom(r['memory'])})" for n, r in out.items()
         if not r["fits"]]
  return "DOES NOT FIT: " + ", ".join(bad)


def _oom(memory: dict) -> str:
  if "oom_needed" not in memory:
    return ""
  return f": needs {memory['oom_needed'] / 2**30:.2f} GiB, {memory['oom_available'] / 2**30:.2f} GiB available"


def _gen_sizes(cfg, target, gen: dict) -> dict:
  split = None
  if not gen.get("batch"):
    ici, dcn = tuple(cfg.mesh.ici), tuple(cfg.mesh.get("dcn", (1, 1, 1)))
    shape = topology.slice_mesh_shape(ici, dcn, target.slice)
    split = shape[0] * shape[1]
  return dict(batch=gen.get("batch") or split,
              prompt_len=gen.get("prompt_len") or max(int(s) for s in cfg.data.seq_buckets),
              new_tokens=int(gen.get("new_tokens", 256)))


def _search(cfg, target, mfu, gen, first: dict, mesh_shape: dict, log) -> dict:
  split = mesh_shape["data"] * mesh_shape["fsdp"]
  accums = search_lib.accum_options(first["batch"], split)
  policies = search_lib.remat_policies()
  log(f"plan: the train step does not fit; trying remat {policies} x grad_accum_steps {accums}", flush=True)

  def try_one(remat, accum):
    if remat == first["remat"] and accum == first["grad_accum_steps"]:
      return first
    out = core.plan_steps(core.with_overrides(cfg, remat, accum), target, ("train",), mfu, gen)
    return out["train"]

  best, trials = search_lib.search(try_one, policies, accums, log=lambda m: log(m, flush=True))
  return dict(best=best, trials=trials, policies=list(policies), grad_accum_options=accums)

