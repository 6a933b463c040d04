"""Run a sweep: every checkpoint × every dataset, resumable, then the report (see `report.py`).

Layout under the workdir:
  <checkpoint>/<dataset>.jsonl                  per-sample dump (id, prompt, references, hypothesis,
                                                normalised forms and errors from the recipe, ids, ...)
  <checkpoint>/<dataset>.<fp>.part-P-of-N.jsonl  rows flushed by process P while the cell runs
  cells/<checkpoint>/<dataset>.json             the finished cell (summary + fingerprint): a re-run skips it
  results.json, results.md, results.png, manifest.json
A cell's fingerprint covers the checkpoint's content hash, the dataset entry, the recipe and the decode
settings: changing any of them re-runs that cell only. Multi-process sweeps need a workdir every
process can read (a shared filesystem); each process decodes its share on its own devices.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from typing import Any

import jax
from tqdm import tqdm

from qwen_audio_jax.data.sources import records_of
from qwen_audio_jax.eval import cell as cell_lib
from qwen_audio_jax.eval import recipes, report
from qwen_audio_jax.eval import sweep_config as config_lib
from qwen_audio_jax.infer.pipeline import Pipeline

log = logging.getLogger(__name__)


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(name)


def load_records(dataset: dict) -> list[dict]:
  records = list(records_of(dataset["source"]))
  return records[:dataset["limit"]] if dataset["limit"] else records


def check_inputs(datasets: list[dict], checkpoints: list[dict]) -> dict[str, list[dict]]:
  """Every manifest readable and every audio path present, before any model work; returns the records."""
  from qwen_audio_jax import checkpoint_io  # pylint: disable=import-outside-toplevel
  for ckpt in checkpoints:
    checkpoint_io.read_config(ckpt["path"])
  out = {}
  for d in datasets:
    records = load_records(d)
    for r in records:
      if isinstance(r["audio"], str) and "://" not in r["audio"] and not os.path.exists(r["audio"]):
        raise FileNotFoundError(f"dataset {d['name']}: audio file {r['audio']} (record {r['id']}) not found")
    out[d["name"]] = records
  return out


def fingerprint(content_hash: str, dataset: dict, settings: dict, extra: dict) -> str:
  blob = json.dumps({"checkpoint": content_hash, "dataset": dataset, "decode": settings, **extra},
                    sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _settings(pipe: Pipeline, dataset: dict, decode) -> Any:
  d = dict(decode)
  options = {k: d[k] for k in ("num_beams", "temperature", "top_k", "top_p", "seed", "length_penalty",
                                "max_new_tokens_per_second", "loop_guard_tokens")}
  if int(d.get("max_new_tokens", 0)) > 0:
    options["max_new_tokens"] = int(d["max_new_tokens"])
  if int(dataset.get("max_new_tokens", 0) or 0) > 0:
    options["max_new_tokens"] = int(dataset["max_new_tokens"])
  return pipe.settings("base", dataset["task"], **options)


def run_cell(pipe: Pipeline, ckpt: dict, dataset: dict, records: list[dict], workdir: str, decode, cfg,
             content_hash: str) -> dict:
  settings = _settings(pipe, dataset, decode)
  fp = fingerprint(content_hash, dataset, settings.as_record(),
                   {"long_audio": cfg.long_audio, "dtype": cfg.dtype, "max_bad": cfg.max_bad_fraction})
  done_path = os.path.join(workdir, "cells", ckpt["name"], dataset["name"] + ".json")
  if os.path.exists(done_path):
    with open(done_path) as f:
      finished = json.load(f)
    if finished.get("fingerprint") == fp:
      log.warning("cell %s × %s finished earlier (fingerprint %s): skipped", ckpt["name"], dataset["name"], fp)
      return finished
  p, n = jax.process_index(), jax.process_count()
  folder = os.path.join(workdir, ckpt["name"])
  os.makedirs(folder, exist_ok=True)
  part = os.path.join(folder, f"{dataset['name']}.{fp}.part-{p:03d}-of-{n:03d}.jsonl")
  share = len(range(p, len(records), n))
  bar = tqdm(total=share, desc=f"{ckpt['name']} × {dataset['name']}", unit="sample", disable=p != 0,
             dynamic_ncols=True)
  t0 = time.time()
  cell_lib.run_shard(pipe, records, part, settings, batch_size=int(decode.batch_size), process_index=p,
                     process_count=n, on_batch=bar.update)
  bar.close()
  _barrier(f"cell {ckpt['name']} {dataset['name']} decoded")
  result = None
  if p == 0:
    rows = []
    for q in range(n):
      rows += cell_lib.read_part(os.path.join(folder, f"{dataset['name']}.{fp}.part-{q:03d}-of-{n:03d}.jsonl"))
    rows.sort(key=lambda r: r["index"])
    summary, dump = cell_lib.score(dataset, rows, records, float(cfg.max_bad_fraction))
    report.write_atomic(os.path.join(folder, dataset["name"] + ".jsonl"),
                        "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in dump))
    seconds = time.time() - t0
    result = {"checkpoint": ckpt["name"], "dataset": dataset["name"], "task": dataset["task"],
              "recipe": dataset["recipe"], "summary": summary, "reference": dataset.get("reference", {}),
              "fingerprint": fp, "decode": settings.as_record(), "seconds": seconds,
              "dump": os.path.relpath(os.path.join(folder, dataset["name"] + ".jsonl"), workdir)}
    report.write_json(done_path, result)
    for q in range(n):
      stale = os.path.join(folder, f"{dataset['name']}.{fp}.part-{q:03d}-of-{n:03d}.jsonl")
      if os.path.exists(stale):
        os.remove(stale)
    key, value = report.headline(summary)
    print(f"{ckpt['name']} × {dataset['name']}: {key} {value} ({summary['n']} samples, {summary['n_bad']} "
          f"unusable, {seconds:.0f} s)", flush=True)
  _barrier(f"cell {ckpt['name']} {dataset['name']} scored")
  if result is None:
    with open(done_path) as f:
      result = json.load(f)
  return result


def run(cfg, workdir: str) -> dict:
  """Runs (or resumes) the sweep; returns results.json's content."""
  checkpoints = config_lib.checkpoint_list(cfg)
  datasets, skipped = config_lib.dataset_list(cfg)
  for name in skipped:
    print(f"dataset {name}: no manifest path given (--config.paths.{name}=FILE), skipped", flush=True)
  records = check_inputs(datasets, checkpoints)
  os.makedirs(workdir, exist_ok=True)
  cache: dict = {}
  cells, hashes = [], {}
  for ckpt in checkpoints:
    hashes[ckpt["name"]] = report.checkpoint_hash(ckpt["path"])
    pipe = Pipeline.from_checkpoint(ckpt["path"], dtype=cfg.dtype or None, mesh_shape=tuple(cfg.mesh),
                                    max_batch=int(cfg.decode.batch_size), long_audio=cfg.long_audio,
                                    compile_cache=cache)
    for d in datasets:
      cells.append(run_cell(pipe, ckpt, d, records[d["name"]], workdir, cfg.decode, cfg, hashes[ckpt["name"]]))
  results = {"cells": cells}
  if jax.process_index() == 0:
    names = [c["name"] for c in checkpoints]
    report.write_json(os.path.join(workdir, "results.json"), results)
    report.write_atomic(os.path.join(workdir, "results.md"), report.markdown(cells, names, datasets))
    if cfg.chart:
      report.chart(os.path.join(workdir, "results.png"), cells, names, datasets)
    impl = {d["recipe"]: recipes.get(d["recipe"]).impl() | {"name": d["recipe"]} for d in datasets}
    report.write_json(os.path.join(workdir, "manifest.json"), report.manifest(
        json.loads(cfg.to_json_best_effort()), checkpoints, hashes, datasets, cfg.decode.to_dict(), impl))
  _barrier("sweep written")
  return results
