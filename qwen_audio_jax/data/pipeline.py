"""The training iterator: weighted mixture, process-count-independent global order, exact resume.

Global order. Each source is shuffled (grain `MapDataset.shuffle`, reshuffled every epoch by
`repeat`) and the sources are interleaved by weight (`MapDataset.mix`): one infinite sequence of
records indexed by global position. Global batch g holds positions [g*G, (g+1)*G); process p of P
builds rows [p*G/P, (p+1)*G/P) of it. Concatenating the local batches in process order (what
`jax.make_array_from_process_local_data` does) therefore gives the same global batch for every P.

Bad examples. If a position's record cannot be used (see `examples.py`), its slot is refilled from
position-specific independent draws (`max_retries` mixtures with other seeds); if all fail the slot is
left empty (example_mask 0, no loss). Retries depend on the position only, never on P. Every failure
is counted; past `max_bad_fraction` (after `min_examples_for_bad_check` tries) `DataQualityError`.

State. `get_state()` = {"global_batches": g, ...} (JSON); `set_state` restarts at global batch g, on
any process count. Batches are built in grain (`MapDataset.range(g, ∞).map(build_batch)`, then
`to_iter_dataset(ReadOptions)` and optional `mp_prefetch` workers), so output never depends on the
number of threads or workers either.

Buckets across hosts. Each process picks the smallest bucket that fits its own rows; in multi-host
runs the processes must agree: `bucket_sync` maps the local length to the agreed one (default: the
max over processes via `multihost_utils.process_allgather` when jax.process_count() > 1).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import zlib
from typing import Any, Callable

from absl import flags
import grain
import jax
import numpy as np

from qwen_audio_jax.data import config as config_lib
from qwen_audio_jax.data.batching import collate_train, pad_batch_to
from qwen_audio_jax.data.examples import DATA_ERRORS, ExampleEncoder
from qwen_audio_jax.data.records import describe
from qwen_audio_jax.data.sources import make_source

STATE_VERSION = 1
_MAX_BATCHES = 2 ** 62
_ORDER_KEYS = ("name", "split", "weight", "tasks", "size", "seed", "path")  # what fixes the order


class DataQualityError(RuntimeError):
  """Too many bad examples: the data (or its config) is broken, not just a few files."""


def derive_seed(*parts: Any) -> int:
  """A 32-bit seed from any printable parts (grain shuffles take seeds < 2**32)."""
  return zlib.crc32("/".join(str(p) for p in parts).encode())


def build_mixtures(entries: list[dict], seed: int, draws: int) -> list[grain.MapDataset]:
  """`draws` independent infinite weighted mixtures of the same sources (draw 0 = the main order)."""
  sources = [make_source(entry) for entry in entries]
  weights = [float(entry.get("weight", 1.0)) for entry in entries]
  mixtures = []
  for draw in range(draws):
    parts = [src.shuffle(derive_seed(seed, draw, k)).repeat() for k, src in enumerate(sources)]
    mixtures.append(parts[0] if len(parts) == 1 else grain.MapDataset.mix(parts, weights))
  return mixtures


@dataclasses.dataclass
class BatchBuilder:
  """Builds process `process_index`'s rows of global batch g (picklable; runs in grain workers)."""

  mixtures: list[grain.MapDataset]
  encoder: ExampleEncoder
  global_batch_size: int
  process_index: int
  process_count: int
  buckets: tuple[int, ...]
  max_audios: int
  n_mels: int
  mel_frames: int = 0  # > 0: compute only the first mel frames (the training run's crop)

  def positions(self, g: int) -> range:
    rows = self.global_batch_size // self.process_count
    start = g * self.global_batch_size + self.process_index * rows
    return range(start, start + rows)

  def example(self, position: int, stats: dict):
    for draw, mixture in enumerate(self.mixtures):
      stats["tried"] += 1
      where = f"global position {position} (draw {draw})"
      try:
        record = mixture[position]
        where = describe(record)
        encoded = self.encoder.encode(record)
        stats["truncated"] += int(encoded.truncated)
        stats["ids"].append(where)
        return encoded
      except DATA_ERRORS as error:
        stats["bad"] += 1
        stats["last_bad"] = [where, f"{type(error).__name__}: {error}"]
    stats["empty"] += 1
    stats["ids"].append(None)
    return None

  def __call__(self, g: int) -> dict:
    stats = {"tried": 0, "bad": 0, "empty": 0, "truncated": 0, "last_bad": None, "ids": []}
    examples = [self.example(pos, stats) for pos in self.positions(int(g))]
    batch = collate_train(examples, buckets=self.buckets, max_audios=self.max_audios,
                          n_mels=self.n_mels, pad_id=self.encoder.tokenizer.pad_id,
                          mel_frames=self.mel_frames)
    batch["_stats"] = stats
    return batch


def _worker_init(worker_index: int, worker_count: int) -> None:
  """grain worker processes decode and compute mels on CPU only (never grab the accelerator), and leave
  Ctrl-C to the trainer (which checkpoints at the next step boundary)."""
  del worker_index, worker_count
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  os.environ["JAX_PLATFORMS"] = "cpu"
  jax.config.update("jax_platforms", "cpu")


def _auto_bucket_sync() -> Callable[[int], int] | None:
  if jax.process_count() == 1:
    return None
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  return lambda length: int(np.max(multihost_utils.process_allgather(np.int32(length))))


class TrainIterator:
  """Iterator of per-process numpy batches with JSON `get_state`/`set_state` and data metrics."""

  def __init__(self, data_config, *, global_batch_size: int, process_index: int, process_count: int,
               seed: int, bucket_sync: Callable[[int], int] | None | str = "auto", mel_frames: int = 0):
    cfg = config_lib.as_config(data_config)
    if global_batch_size <= 0 or global_batch_size % process_count:
      raise config_lib.DataConfigError(
          f"global_batch_size={global_batch_size} must be a positive multiple of process_count="
          f"{process_count}")
    if not 0 <= process_index < process_count:
      raise config_lib.DataConfigError(f"process_index={process_index} not in [0, {process_count})")
    self.config, self.seed = cfg, int(seed)
    self.global_batch_size, self.process_index, self.process_count = (
        int(global_batch_size), int(process_index), int(process_count))
    self.bucket_sync = _auto_bucket_sync() if bucket_sync == "auto" else bucket_sync
    self.builder = BatchBuilder(
        mixtures=build_mixtures(config_lib.source_entries(cfg), self.seed, int(cfg.max_retries) + 1),
        encoder=ExampleEncoder.from_config(cfg), global_batch_size=self.global_batch_size,
        process_index=self.process_index, process_count=self.process_count,
        buckets=tuple(int(b) for b in cfg.seq_buckets), max_audios=int(cfg.max_audios),
        n_mels=int(cfg.n_mels), mel_frames=int(mel_frames))
    self.global_batches = 0
    self.counters = {"tried": 0, "bad": 0, "empty": 0, "truncated": 0}
    self.last_bad: list[str] | None = None
    self.last_example_ids: list[str | None] = []  # this process's rows of the last batch (None: empty slot)
    self._iterator = None

  # --- iteration ---------------------------------------------------------------------------
  def _start(self):
    cfg = self.config
    dataset = grain.MapDataset.range(self.global_batches, _MAX_BATCHES).map(self.builder)
    dataset = dataset.to_iter_dataset(grain.ReadOptions(
        num_threads=int(cfg.num_threads), prefetch_buffer_size=int(cfg.prefetch_buffer_size)))
    if int(cfg.num_workers) > 0:
      if not flags.FLAGS.is_parsed():  # grain reads absl flags in mp_prefetch; keep their defaults
        flags.FLAGS.mark_as_parsed()
      dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=int(cfg.num_workers), per_worker_buffer_size=int(cfg.worker_buffer_size)),
          worker_init_fn=_worker_init)
    return iter(dataset)

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self._iterator is None:
      self._iterator = self._start()
    batch = next(self._iterator)
    if int(self.config.num_workers) > 0:  # own the arrays; grain's shared memory is released now
      batch = {k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in batch.items()}
    stats = batch.pop("_stats")
    self.global_batches += 1
    for key in self.counters:
      self.counters[key] += int(stats[key])
    self.last_bad = stats["last_bad"] or self.last_bad
    self.last_example_ids = list(stats["ids"])
    self._check_quality()
    if self.bucket_sync is not None:
      batch = pad_batch_to(batch, self.bucket_sync(batch["input_ids"].shape[1]),
                           self.builder.encoder.tokenizer.pad_id)
    return batch

  def _check_quality(self) -> None:
    tried, bad = self.counters["tried"], self.counters["bad"]
    limit = float(self.config.max_bad_fraction)
    if tried >= int(self.config.min_examples_for_bad_check) and bad > limit * tried:
      where, cause = self.last_bad or ("?", "?")
      raise DataQualityError(
          f"data pipeline: {bad}/{tried} examples ({100.0 * bad / tried:.2f}%) were bad, over "
          f"max_bad_fraction={100.0 * limit:.2f}%; last bad: {where}: {cause}")

  def close(self) -> None:
    if self._iterator is not None and hasattr(self._iterator, "close"):
      self._iterator.close()
    self._iterator = None

  # --- state and metrics -------------------------------------------------------------------
  def get_state(self) -> dict[str, Any]:
    """JSON-serialisable; only `global_batches` (with seed/batch size/sources) fixes the order."""
    return {"version": STATE_VERSION, "global_batches": self.global_batches, "seed": self.seed,
            "global_batch_size": self.global_batch_size,
            "sources": [{k: str(e[k]) for k in _ORDER_KEYS if k in e}
                        for e in config_lib.source_entries(self.config)],
            "counters": dict(self.counters), "last_bad": self.last_bad}

  def set_state(self, state: dict[str, Any]) -> None:
    """Continues after `state["global_batches"]` global batches (any process count)."""
    if state.get("version") != STATE_VERSION:
      raise ValueError(f"data iterator state version {state.get('version')!r} != {STATE_VERSION}")
    for key in ("seed", "global_batch_size", "sources"):
      mine = self.get_state()[key]
      if state[key] != mine:
        raise ValueError(f"data iterator state: {key} differs (checkpoint {state[key]!r}, now "
                         f"{mine!r}); the sample order would change")
    self.close()
    self.global_batches = int(state["global_batches"])
    self.counters = {k: int(v) for k, v in state["counters"].items()}
    self.last_bad = state.get("last_bad")

  def metrics(self) -> dict[str, Any]:
    tried = max(1, self.counters["tried"])
    return {**self.counters, "bad_fraction": self.counters["bad"] / tried,
            "global_batches": self.global_batches,
            "last_bad": None if self.last_bad is None else ": ".join(self.last_bad)}


def make_train_iterator(data_config, *, global_batch_size: int, process_index: int | None = None,
                        process_count: int | None = None, seed: int = 0,
                        bucket_sync: Callable[[int], int] | None | str = "auto", mel_frames: int = 0) -> TrainIterator:
  """This process's training batches (see module docstring; fields in `batching.collate_train`).

  mel_frames > 0: audio_mel holds only the first mel_frames frames of the 30 s window (the training
  run's crop, `train.mel_frames`; the loop checks that every clip fits), computed from that much audio.

  process_index / process_count default to jax.process_index() / jax.process_count(); tests pass
  them explicitly to simulate several hosts in one process.
  """
  return TrainIterator(
      data_config, global_batch_size=global_batch_size,
      process_index=jax.process_index() if process_index is None else process_index,
      process_count=jax.process_count() if process_count is None else process_count,
      seed=seed, bucket_sync=bucket_sync, mel_frames=mel_frames)

