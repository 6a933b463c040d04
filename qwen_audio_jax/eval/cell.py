"""One sweep cell: a checkpoint decoding one dataset, resumable sample by sample, then scored.

Process p of P decodes samples p, p+P, ... and appends one JSON line per sample to its own part file
(flushed and fsynced after every batch), so a killed sweep resumes after its last flushed sample; a
half-written last line is dropped. When every process is done, process 0 merges the parts in sample
order, scores them with the dataset's recipe and writes the per-sample dump. Samples whose audio or
prompt cannot be used are recorded with their error and left out of the metric (counted).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Sequence

from qwen_audio_jax.data.examples import DATA_ERRORS
from qwen_audio_jax.data.records import describe
from qwen_audio_jax.eval import recipes
from qwen_audio_jax.infer.engine import Prompt
from qwen_audio_jax.infer.results import row_text


class TooManyBadSamples(RuntimeError):
  """More unusable samples than the config allows."""


def references(record: dict) -> list[str]:
  return record["references"].split("\n") if record.get("references") else [record["text"]]


def encode(pipe, record: dict) -> tuple[Prompt | None, str, str | None]:
  """(engine row or None, the prompt text, error) for one record."""
  try:
    prompt_text = pipe.encoder.prompt_text(record)
    enc = pipe.encoder.encode(record, with_answer=False)
  except DATA_ERRORS as e:
    return None, "", f"{describe(record)}: {type(e).__name__}: {e}"
  return Prompt(ids=enc.ids, waveforms=enc.waveforms, encoder_frames=enc.encoder_frames,
                audio_seconds=enc.audio_seconds), prompt_text, None


def decode_rows(pipe, records: Sequence[dict], indices: Sequence[int], settings) -> list[dict]:
  """Decoded sample rows (dump format, no metrics yet) for records[indices]."""
  encoded = [encode(pipe, records[i]) for i in indices]
  prompts = [p for p, _, _ in encoded if p is not None]
  outs = iter(pipe.generator.generate(prompts, settings) if prompts else [])
  rows = []
  for i, (prompt, text, error) in zip(indices, encoded):
    record = records[i]
    row = {"index": int(i), "id": record["id"], "source": record["source"], "prompt": text,
           "references": references(record), "hypothesis": "", "ids": [], "finish_reason": None,
           "error": error}
    if prompt is not None:
      out = next(outs)
      row.update(hypothesis=row_text(out, pipe.tokenizer, chat=False), ids=out.ids, finish_reason=out.reason)
    rows.append(row)
  return rows


def read_part(path: str) -> list[dict]:
  """Rows flushed so far; a torn last line (killed mid-write) is cut off the file."""
  if not os.path.exists(path):
    return []
  rows, good = [], 0
  with open(path, "rb") as f:
    data = f.read()
  for line in data.splitlines(keepends=True):
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      break
    if not line.endswith(b"\n"):
      rows.pop()
      break
    good += len(line)
  if good != len(data):
    with open(path, "r+b") as f:
      f.truncate(good)
  return rows


def run_shard(pipe, records: Sequence[dict], part_path: str, settings, *, batch_size: int, process_index: int,
              process_count: int, on_batch: Callable[[int], None] | None = None) -> list[dict]:
  """Decodes this process's share of `records` into `part_path`, resuming after its flushed rows."""
  done = {row["index"]: row for row in read_part(part_path)}
  todo = [i for i in range(process_index, len(records), process_count) if i not in done]
  if on_batch:
    on_batch(len(done))
  with open(part_path, "a", encoding="utf-8") as f:
    for start in range(0, len(todo), batch_size):
      rows = decode_rows(pipe, records, todo[start:start + batch_size], settings)
      for row in rows:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        done[row["index"]] = row
      f.flush()
      os.fsync(f.fileno())
      if on_batch:
        on_batch(len(rows))
  return [done[i] for i in sorted(done)]


def recipe_fields(dataset: dict, rows: Sequence[dict], records: Sequence[dict]) -> dict[str, Any]:
  """Recipe keyword fields: the dataset's fixed ones, per-sample source, and per-record languages."""
  recipe = recipes.get(dataset["recipe"])
  fields = dict(dataset.get("fields", {}))
  fields["source"] = [r["source"] for r in rows]
  if "lang" in recipe.fields and "lang" not in fields and "dataset" not in fields:
    fields["lang"] = [records[r["index"]]["lang"] for r in rows]
  if "tgt_lang" in recipe.fields and "tgt_lang" not in fields:
    fields["tgt_lang"] = [records[r["index"]]["text_lang"] for r in rows]
  return fields


def score(dataset: dict, rows: Sequence[dict], records: Sequence[dict], max_bad_fraction: float):
  """(summary, per-sample dump rows) with the recipe's normalised forms and errors merged in."""
  bad = [r for r in rows if r["error"]]
  if rows and len(bad) > max_bad_fraction * len(rows):
    raise TooManyBadSamples(f"dataset {dataset['name']}: {len(bad)}/{len(rows)} samples unusable (over "
                            f"max_bad_fraction={max_bad_fraction}); first: {bad[0]['error']}")
  good = [r for r in rows if not r["error"]]
  if not good:
    raise TooManyBadSamples(f"dataset {dataset['name']}: no usable sample")
  recipe = recipes.get(dataset["recipe"])
  refs = [r["references"] if recipe.multi_ref else r["references"][0] for r in good]
  summary, samples = recipe.evaluate(refs, [r["hypothesis"] for r in good], **recipe_fields(dataset, good, records))
  dump = []
  scored = iter(samples)
  for row in rows:
    merged = dict(row)
    if not row["error"]:
      merged["metrics"] = {k: v for k, v in next(scored).items() if k not in ("index", "source", "ref", "hyp")}
    dump.append(merged)
  summary.update(n_bad=len(bad), n_total=len(rows))
  return summary, dump
