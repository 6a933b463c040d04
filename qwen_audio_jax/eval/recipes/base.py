"""Recipe base: input checks, per-sample fields, per-`source` subsets, and the result layout.

A recipe turns (refs, hyps, fields) into
  summary = {"recipe": "metric@version", "headline": KEY, KEY: value, ...parts, "n": N,
             "per_source": {source: {"n": ..., KEY: ..., ...parts}}  (only when `source` is given),
             "impl": {what is needed to reproduce the figure: library versions, signatures, rules}}
  samples = [{"index": i, "source": ..., "ref": ..., "hyp": ..., normalised text, per-sample errors}]
Subclasses implement `_sample` (one pair → dict; keys starting with '_' are internal and not dumped)
and `_aggregate` (a list of sample dicts → metrics, optionally per-item scores).
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any, Mapping, Sequence

SCALARS = (str, int, float, bool, type(None))


class RecipeError(ValueError):
  """Bad input to a recipe (one line naming the recipe, the argument and the cause)."""


class RecipeDependencyError(RuntimeError):
  """A package or tool that a recipe needs is missing (one line naming it and how to install it)."""


def require(recipe: str, module: str, install: str):
  """Import `module` or raise RecipeDependencyError naming the pip requirement to install."""
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise RecipeDependencyError(f"{recipe}: needs the Python module {module!r} ({e}); "
                                f"install it with: pip install '{install}'") from None


def version_of(dist: str) -> str | None:
  try:
    return importlib.metadata.version(dist)
  except importlib.metadata.PackageNotFoundError:
    return None


def _check_text(recipe: str, what: str, i: int, x: Any, multi: bool) -> None:
  if isinstance(x, str):
    return
  if multi and isinstance(x, (list, tuple)) and x and all(isinstance(r, str) for r in x):
    return
  want = "a str or a non-empty list of str" if multi else "a str"
  raise RecipeError(f"{recipe}: {what}[{i}] is {type(x).__name__} {x!r:.60}, expected {want}")


def check_pairs(recipe: str, refs: Any, hyps: Any, multi_ref: bool) -> int:
  for what, xs in (("refs", refs), ("hyps", hyps)):
    if isinstance(xs, (str, bytes)) or not isinstance(xs, Sequence):
      raise RecipeError(f"{recipe}: {what} must be a list (one entry per sample), got {type(xs).__name__}")
  if len(refs) != len(hyps):
    raise RecipeError(f"{recipe}: {len(refs)} refs but {len(hyps)} hyps (one of each per sample)")
  if not refs:
    raise RecipeError(f"{recipe}: no samples (refs and hyps are empty)")
  for i, (r, h) in enumerate(zip(refs, hyps)):
    _check_text(recipe, "refs", i, r, multi_ref)
    _check_text(recipe, "hyps", i, h, False)
  return len(refs)


def expand_fields(recipe: str, n: int, fields: Mapping[str, Any], allowed: Mapping[str, str]) -> dict:
  """Each field: one scalar for all samples, or a list with one value per sample."""
  unknown = sorted(set(fields) - set(allowed))
  if unknown:
    raise RecipeError(f"{recipe}: unknown field(s) {', '.join(unknown)} (accepted: {', '.join(allowed)})")
  out = {}
  for key, value in fields.items():
    if isinstance(value, SCALARS):
      out[key] = [value] * n
    elif isinstance(value, Sequence) and len(value) == n and all(isinstance(v, SCALARS) for v in value):
      out[key] = list(value)
    else:
      size = f"{len(value)} values" if isinstance(value, Sequence) else type(value).__name__
      raise RecipeError(f"{recipe}: field {key!r} must be one scalar or {n} scalars (one per sample), got {size}")
  return out


class Recipe:
  """A named, versioned metric computation. See the module docstring for the result layout."""

  metric: str = ""
  version: str = ""
  headline: str = ""
  fields: Mapping[str, str] = {}  # accepted keyword fields besides `source` → what they mean
  multi_ref: bool = False

  @property
  def name(self) -> str:
    return f"{self.metric}@{self.version}"

  def __repr__(self) -> str:
    return f"<recipe {self.name}>"

  # -- to implement ------------------------------------------------------------------------------
  def _sample(self, ref: Any, hyp: str, fields: dict) -> dict:
    raise NotImplementedError

  def _aggregate(self, samples: list[dict]) -> tuple[dict, list[dict] | None]:
    raise NotImplementedError

  def impl(self) -> dict:
    return {}

  # -- public ------------------------------------------------------------------------------------
  def evaluate(self, refs: Sequence, hyps: Sequence[str], **fields) -> tuple[dict, list[dict]]:
    """(summary, samples): the corpus figures and the per-sample dump, computed once."""
    n = check_pairs(self.name, refs, hyps, self.multi_ref)
    accepted = {**self.fields, "source": "subset name; figures are also given per source"}
    columns = expand_fields(self.name, n, fields, accepted)
    samples = []
    for i in range(n):
      row = {key: col[i] for key, col in columns.items()}
      if "source" in row:
        row["source"] = str(row["source"])
      samples.append({"index": i, **({"source": row["source"]} if "source" in row else {}),
                      "ref": refs[i], "hyp": hyps[i], **self._sample(refs[i], hyps[i], row)})
    overall, items = self._aggregate(samples)
    summary = {"recipe": self.name, "headline": self.headline, **overall, "n": n}
    if "source" in columns:
      groups: dict[str, list[dict]] = {}
      for s in samples:
        groups.setdefault(s["source"], []).append(s)
      per_source = {}
      for src, group in groups.items():
        metrics, group_items = (overall, items) if len(groups) == 1 else self._aggregate(group)
        per_source[src] = {"n": len(group), **metrics}
        for s, extra in zip(group, group_items or []):
          s.update(extra)  # per-item scores as the official script gets them: within the source
      summary["per_source"] = per_source
    elif items:
      for s, extra in zip(samples, items):
        s.update(extra)
    summary["impl"] = {"recipe": self.name, **self.impl()}
    return summary, [{k: v for k, v in s.items() if not k.startswith("_")} for s in samples]

  def score(self, refs: Sequence, hyps: Sequence[str], **fields) -> dict:
    """Corpus figures: headline, its parts, per-source values, reproduction info."""
    return self.evaluate(refs, hyps, **fields)[0]

  def per_sample(self, refs: Sequence, hyps: Sequence[str], **fields) -> list[dict]:
    """Per-sample normalised ref/hyp and errors (use `evaluate` to get both in one pass)."""
    return self.evaluate(refs, hyps, **fields)[1]
