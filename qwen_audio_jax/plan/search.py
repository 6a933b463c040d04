"""When the train step does not fit: try the remat policies and micro-batch counts the config allows.

Candidates are ranked by estimated hardware FLOPs per step (model FLOPs + what the remat policy
recomputes: "full" re-runs the forward of every tower that back-propagates, "minimal" only its
attention scores/values, "none" nothing), then by fewer micro-batches. Peak memory falls as
grad_accum_steps grows, so for each policy (cheapest first) the largest micro-batch count is tried
first and, when it fits, the smallest fitting count is found by bisection. The first policy with a
fitting count gives the answer: fewer compiles than trying every pair.
"""

from __future__ import annotations

import typing
from typing import Callable

from qwen_audio_jax.model.config import ModelConfig
from qwen_audio_jax.train import metrics as metrics_lib

_COST_ORDER = {"none": 0, "minimal": 1, "full": 2}


def remat_policies() -> tuple[str, ...]:
  """The policies ModelConfig.remat_policy accepts, cheapest (least recompute) first."""
  hint = typing.get_type_hints(ModelConfig)["remat_policy"]
  return tuple(sorted(typing.get_args(hint), key=lambda p: _COST_ORDER.get(p, 1.5)))


def accum_options(batch: int, split: int) -> list[int]:
  """grad_accum_steps values that keep every micro-batch evenly split over data x fsdp."""
  return [a for a in range(1, batch + 1) if batch % a == 0 and (batch // a) % split == 0]


def hardware_flops(mcfg, shape: dict, remat: str) -> float:
  """Model FLOPs of the train step plus the FLOPs `remat` recomputes in the backward pass."""
  enc_mult, dec_mult = shape["tower_multipliers"]
  model = metrics_lib.step_flops(mcfg, shape["tokens"], shape["seq_len"], shape["audio_rows"],
                                 shape["mel_frames"], (enc_mult, dec_mult))
  if remat == "none":
    return model
  extra = 0.0
  if mcfg.decoder is not None and dec_mult >= 2:
    d = mcfg.decoder
    attn = 2 * d.n_layers * shape["seq_len"] * d.n_heads * d.head_dim
    per_token = metrics_lib.decoder_flops_per_token(mcfg, shape["seq_len"]) if remat == "full" else attn
    extra += shape["tokens"] * per_token
  if mcfg.encoder is not None and shape["audio_rows"] and enc_mult >= 2:
    e = mcfg.encoder
    t = (shape["mel_frames"] + 1) // 2
    per_clip = (metrics_lib.encoder_flops_per_clip(mcfg, shape["mel_frames"]) if remat == "full"
                else 4 * e.n_layers * t * t * e.d_model)
    extra += shape["audio_rows"] * per_clip
  return model + extra


def search(try_one: Callable[[str, int], dict], policies, accums, log=print) -> tuple[dict | None, list[dict]]:
  """`try_one(remat, accum)` → a train-step result (with "fits"); returns (best or None, all trials)."""
  trials = []

  def fits(remat, accum):
    res = dict(try_one(remat, accum), remat=remat, grad_accum_steps=accum)
    trials.append(res)
    log(f"  tried remat={remat} grad_accum_steps={accum}: "
        + ("fits" if res["fits"] else "does not fit") + _mem(res))
    return res if res["fits"] else None

  for remat in policies:
    best = fits(remat, accums[-1])
    if best is None:
      continue
    lo, hi = 0, len(accums) - 1  # accums[hi] fits; find the smallest index that fits
    while lo < hi:
      mid = (lo + hi) // 2
      res = fits(remat, accums[mid])
      if res is not None:
        best, hi = res, mid
      else:
        lo = mid + 1
    return best, trials
  return None, trials


def _mem(res: dict) -> str:
  total = res.get("memory", {}).get("total")
  return f" ({total / 2**30:.2f} GiB per device)" if total else ""
