"""Training sequences: prompt + answer (+ eod) and a loss mask that is 1 only on answer tokens."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


class SequenceTooLongError(ValueError):
  """The example does not fit `max_length` (we never truncate silently)."""


@dataclasses.dataclass(frozen=True)
class TrainingExample:
  ids: np.ndarray  # [T] int32
  loss_mask: np.ndarray  # [T] int32: 1 where ids[t] is a target (predicted from position t - 1)


def build_training_example(prompt_ids: Sequence[int], answer_ids: Sequence[int], eod_id: int,
                           append_eod: bool = True, max_length: int | None = None) -> TrainingExample:
  """`prompt + answer + [eod]` with mask 0 on the prompt and 1 on the answer and the final eod.

  `append_eod` adds `eod_id` unless the answer already ends with it. With `max_length`, a longer
  example raises `SequenceTooLongError` (cutting it could drop the answer or split an audio span).
  """
  prompt = [int(i) for i in prompt_ids]
  answer = [int(i) for i in answer_ids]
  if append_eod and (not answer or answer[-1] != eod_id):
    answer.append(int(eod_id))
  if not answer:
    raise ValueError("build_training_example: empty answer (nothing to train on)")
  ids = np.asarray(prompt + answer, dtype=np.int32)
  mask = np.concatenate([np.zeros(len(prompt), np.int32), np.ones(len(answer), np.int32)])
  if max_length is not None and len(ids) > max_length:
    raise SequenceTooLongError(
        f"build_training_example: {len(prompt)} prompt + {len(answer)} answer tokens = {len(ids)} "
        f"> max_length {max_length}")
  return TrainingExample(ids=ids, loss_mask=mask)
