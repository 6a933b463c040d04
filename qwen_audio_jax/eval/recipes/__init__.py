"""Metric recipes: named, versioned reproductions of Qwen-Audio's evaluation scripts (spec §7).

  recipe = recipes.get("asr_wer@qwen-audio-v1")
  summary = recipe.score(refs, hyps, source=sources, lang="en")   # headline, parts, per_source, impl
  samples = recipe.per_sample(refs, hyps, source=sources, lang="en")  # normalised text, errors
  summary, samples = recipe.evaluate(...)                              # both in one pass
  recipes.list()  # names

hyps are the decoded model outputs with special tags kept (as the eval scripts keep them); each recipe
normalises as its official script does. Fields are one scalar or one value per sample; `source`
groups samples into the subsets the scripts report. Bad input raises RecipeError (one line); a missing
package or tool raises RecipeDependencyError naming what to install.
"""

from __future__ import annotations

from qwen_audio_jax.eval.recipes.aac_cider_v1 import AacCiderV1
from qwen_audio_jax.eval.recipes.aqa_acc_v1 import AqaAccV1
from qwen_audio_jax.eval.recipes.asr_wer_v1 import AsrWerV1
from qwen_audio_jax.eval.recipes.asr_wer_whisper import AsrWerWhisper
from qwen_audio_jax.eval.recipes.base import Recipe, RecipeDependencyError, RecipeError
from qwen_audio_jax.eval.recipes.cls_acc_v1 import ClsAccV1
from qwen_audio_jax.eval.recipes.mna_v1 import MnaV1
from qwen_audio_jax.eval.recipes.s2tt_bleu_v1 import S2ttBleuV1
from qwen_audio_jax.eval.recipes.srwt_aas_v1 import SrwtAasV1

_RECIPES: dict[str, Recipe] = {r.name: r for r in (AsrWerV1(), AsrWerWhisper(), S2ttBleuV1(), AacCiderV1(),
                                                   ClsAccV1(), AqaAccV1(), MnaV1(), SrwtAasV1())}


class UnknownRecipeError(RecipeError, KeyError):
  """No recipe of that name."""

  def __str__(self) -> str:  # KeyError would quote the message
    return str(self.args[0])


def names() -> list[str]:
  """Names of all recipes, `metric@version`."""
  return sorted(_RECIPES)


def get(name: str) -> Recipe:
  """The recipe called `name` (exactly, e.g. 'asr_wer@qwen-audio-v1')."""
  if name not in _RECIPES:
    raise UnknownRecipeError(f"unknown metric recipe {name!r}; known recipes: {', '.join(names())}")
  return _RECIPES[name]


list = names  # noqa: A001  (`recipes.list()`; the builtin is not used below; kept out of __all__)

__all__ = ["Recipe", "RecipeDependencyError", "RecipeError", "UnknownRecipeError", "get", "names"]
