"""Types of the name-map tables: a rule maps one PyTorch tensor to one or more parameter paths."""

from __future__ import annotations

import dataclasses
import re

LAYER = "{i}"  # placeholder for the layer index in a PyTorch name; marks a stacked (scanned) rule


@dataclasses.dataclass(frozen=True)
class Rule:
  """`source` (PyTorch name, may contain {i}) <-> `targets` (slash paths in params) via `transform`.

  Rules with {i} write layer i of the stacked leaves (leading axis = layer). `default` names a
  generator used when an optional tensor is absent from a source (e.g. "sinusoids").
  """

  source: str
  targets: tuple[str, ...]
  transform: str = "identity"
  default: str | None = None

  @property
  def stacked(self) -> bool:
    return LAYER in self.source

  @property
  def regex(self) -> re.Pattern:
    head, _, tail = self.source.partition(LAYER)
    pattern = re.escape(head) + (r"(\d+)" + re.escape(tail) if self.stacked else "")
    return re.compile(pattern + r"\Z")

  def name(self, layer: int | None = None) -> str:
    return self.source.replace(LAYER, str(layer)) if self.stacked else self.source


@dataclasses.dataclass(frozen=True)
class NameMap:
  """All rules of one checkpoint naming, plus what to carry through and which aliases to accept.

  carry: regexes (re.search) of tensors the JAX model does not use; stored untouched for export.
  aliases: (regex, replacement) applied to source names before matching (other spellings of the
    same checkpoint, e.g. transformers-5 in-memory names); export always writes the canonical names.
  tied: (name, other) pairs: tensor `name` (carried) repeats source tensor `other` (a tied output
    projection); conversion refuses a source where they differ.
  """

  family: str
  rules: tuple[Rule, ...]
  carry: tuple[str, ...] = ()
  aliases: tuple[tuple[str, str], ...] = ()
  tied: tuple[tuple[str, str], ...] = ()


def prefixed(prefix: str, table, layer_prefix: str = "", path_prefix: str = "") -> tuple[Rule, ...]:
  """Rules from rows (suffix, target path(s), transform[, default]) under name/param prefixes."""
  rules = []
  for row in table:
    suffix, targets, transform, *default = row
    targets = (targets,) if isinstance(targets, str) else targets
    rules.append(Rule(prefix + layer_prefix + suffix, tuple(path_prefix + t for t in targets), transform,
                      default[0] if default else None))
  return tuple(rules)
