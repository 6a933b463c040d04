"""Which parameters train: regex patterns over '/'-joined parameter paths, and tree partitioning.

A parameter is frozen iff its path fully matches a `freeze` pattern and no `trainable` pattern, or it is
one of ALWAYS_FROZEN (no `trainable` pattern unfreezes those).
The trainable part is a pruned copy of the tree (frozen leaves absent), so gradients and optimizer
state exist for trainable leaves only.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Mapping

from flax import traverse_util

# Never trained: the Whisper positional table is a stop-gradient constant (weight decay would
# otherwise still move it).
ALWAYS_FROZEN = (r"audio_encoder/embed_positions", r"mowe/weak_\d+/embed_positions")


class FreezeConfigError(ValueError):
  """A freeze/trainable pattern is invalid or matches nothing."""


def path_str(path: tuple) -> str:
  return "/".join(str(k) for k in path)


def _compile(patterns: Iterable[str], key: str) -> list[re.Pattern]:
  out = []
  for p in patterns:
    try:
      out.append(re.compile(p))
    except re.error as e:
      raise FreezeConfigError(f"train.{key}: bad regex {p!r}: {e}") from None
  return out


def trainable_mask(params: Mapping, freeze: Iterable[str] = (), trainable: Iterable[str] = (),
                   strict: bool = True) -> dict[tuple, bool]:
  """{path tuple: is_trainable} over the flattened tree. `strict`: every pattern must match."""
  freeze, trainable = list(freeze), list(trainable)
  fz, tr = _compile(freeze, "freeze"), _compile(trainable, "trainable")
  always = _compile(ALWAYS_FROZEN, "freeze")
  flat = traverse_util.flatten_dict(dict(params))
  used = set()
  mask = {}
  for path in flat:
    s = path_str(path)
    hit_f = [p for p in fz if p.fullmatch(s)]
    hit_t = [p for p in tr if p.fullmatch(s)]
    used.update(p.pattern for p in hit_f + hit_t)
    mask[path] = (not hit_f or bool(hit_t)) and not any(p.fullmatch(s) for p in always)
  if strict:
    unused = [p for p in freeze + trainable if p not in used]
    if unused:
      raise FreezeConfigError(f"train.freeze/train.trainable pattern(s) {unused} match no parameter "
                              f"(paths look like {path_str(next(iter(flat)))!r})")
  return mask


def split(params: Mapping, mask: Mapping[tuple, bool]) -> tuple[dict, dict]:
  """(trainable, frozen) nested dicts; each holds only its own leaves."""
  flat = traverse_util.flatten_dict(dict(params))
  tr = {p: v for p, v in flat.items() if mask[p]}
  fz = {p: v for p, v in flat.items() if not mask[p]}
  return traverse_util.unflatten_dict(tr), traverse_util.unflatten_dict(fz)


def merge(*trees: Mapping) -> dict:
  """Inverse of `split`."""
  flat: dict[tuple, Any] = {}
  for t in trees:
    flat.update(traverse_util.flatten_dict(dict(t)))
  return traverse_util.unflatten_dict(flat)


def count(tree: Mapping) -> int:
  return sum(math.prod(v.shape) for v in traverse_util.flatten_dict(dict(tree)).values())
