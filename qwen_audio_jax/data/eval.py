"""Eval data: records of one eval source and left-padded prompt batches, sharded over processes.

Process p of P takes records p, p+P, ...; every process yields the same number of batches (the last
ones padded with empty rows, example_mask 0), so collective generate steps never hang. A record
that cannot be used is NOT dropped: its row has example_mask 0 and `EvalRow.error` set, so the eval
loop can report it (score it as wrong or exclude it, but visibly).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator, Mapping, Sequence

import grain
import jax
import numpy as np

from qwen_audio_jax.data import config as config_lib
from qwen_audio_jax.data.batching import collate_eval
from qwen_audio_jax.data.examples import DATA_ERRORS, ExampleEncoder
from qwen_audio_jax.data.records import describe
from qwen_audio_jax.data.sources import records_of
from qwen_audio_jax.prompts import TASKS

DEFAULT_MAX_NEW_TOKENS = 256


@dataclasses.dataclass
class EvalRow:
  """What the eval loop needs besides the arrays: identity, reference(s), decoding budget."""

  index: int  # position of the record in the eval source
  id: str
  source: str
  task: str
  prompt: str  # the tag prompt after the audio (as in Qwen-Audio's eval jsonl)
  gt: str
  references: list[str]  # all references (Clotho: 5 captions); [gt] when there is one
  max_new_tokens: int
  audio_seconds: float = 0.0
  error: str | None = None  # why this record could not be used (its row is empty)


def make_eval_examples(source: Mapping[str, Any], data_config=None, limit: int | None = None) -> list[dict]:
  """Records of one eval source entry (same fields as a `sources` entry), in source order."""
  config_lib.as_config(data_config)  # validates early, even though only the entry is used here
  records = list(records_of(dict(source)))
  return records[:limit] if limit is not None else records


@dataclasses.dataclass
class _EvalBatchBuilder:
  records: Sequence[dict]
  encoder: ExampleEncoder
  batch_size: int
  process_index: int
  process_count: int
  buckets: tuple[int, ...]
  max_audios: int
  n_mels: int

  def row(self, index: int):
    record = self.records[index]
    task = record["task"]
    references = record["references"].split("\n") if record["references"] else [record["text"]]
    info = EvalRow(index=index, id=record["id"], source=record["source"], task=task, prompt="",
                   gt=record["text"], references=references,
                   max_new_tokens=TASKS[task].max_new_tokens if task in TASKS else DEFAULT_MAX_NEW_TOKENS)
    try:
      info.prompt = self.encoder.prompt_text(record)
      encoded = self.encoder.encode(record, with_answer=False)
      info.audio_seconds = encoded.audio_seconds
      return encoded, info
    except DATA_ERRORS as error:
      info.error = f"{describe(record)}: {type(error).__name__}: {error}"
      return None, info

  def __call__(self, b: int):
    first = b * self.batch_size * self.process_count + self.process_index
    indices = range(first, first + self.batch_size * self.process_count, self.process_count)
    pairs = [self.row(i) if i < len(self.records) else (None, None) for i in indices]
    batch = collate_eval([p[0] for p in pairs], buckets=self.buckets, max_audios=self.max_audios,
                         n_mels=self.n_mels, pad_id=self.encoder.tokenizer.pad_id)
    return batch, [p[1] for p in pairs]


def num_eval_batches(num_records: int, batch_size: int, process_count: int) -> int:
  return max(1, math.ceil(num_records / (batch_size * process_count)))


def make_eval_batches(records: Sequence[dict], data_config=None, *, batch_size: int,
                      process_index: int | None = None, process_count: int | None = None
                      ) -> Iterator[tuple[dict[str, np.ndarray], list[EvalRow | None]]]:
  """(batch, rows) pairs: left-padded prompts (`batching.collate_eval`) and one EvalRow per row
  (None for padding rows past the end). Prompts longer than max(seq_buckets) become error rows."""
  cfg = config_lib.as_config(data_config)
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  builder = _EvalBatchBuilder(
      records=list(records), encoder=ExampleEncoder.from_config(cfg), batch_size=int(batch_size),
      process_index=int(process_index), process_count=int(process_count),
      buckets=tuple(int(b) for b in cfg.seq_buckets), max_audios=int(cfg.max_audios),
      n_mels=int(cfg.n_mels))
  n_batches = num_eval_batches(len(builder.records), builder.batch_size, builder.process_count)
  dataset = grain.MapDataset.range(n_batches).map(builder).to_iter_dataset(grain.ReadOptions(
      num_threads=int(cfg.num_threads), prefetch_buffer_size=int(cfg.prefetch_buffer_size)))
  return iter(dataset)
