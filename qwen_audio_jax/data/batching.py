"""Encoded examples → padded numpy batches (token-length buckets, fixed 30 s mel window).

Training batches are RIGHT padded (positions are simply 0..S-1 for every row); eval prompt batches
are LEFT padded so generation starts at the same column for every row (and carry `positions`).
Shapes depend only on (batch size, bucket, max_audios, n_mels), so a train step compiles once per
bucket. Empty slots (no usable example) have all-zero masks, pad ids and zero mel.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import numpy as np

from qwen_audio_jax.audio.lengths import HOP_LENGTH, N_FRAMES, N_SAMPLES
from qwen_audio_jax.audio.mel import log_mel_spectrogram, pad_or_trim
from qwen_audio_jax.data.examples import Encoded
from qwen_audio_jax.data.records import TASKS


def pick_bucket(length: int, buckets: Sequence[int]) -> int:
  """Smallest bucket >= length (callers guarantee length <= max(buckets))."""
  for bucket in buckets:
    if length <= bucket:
      return int(bucket)
  raise ValueError(f"sequence of {length} tokens exceeds the largest bucket {max(buckets)}")


@functools.lru_cache(maxsize=1)
def _cpu():
  return jax.local_devices(backend="cpu")[0]


def audio_features(examples: Sequence[Encoded | None], max_audios: int, n_mels: int, n_frames: int = N_FRAMES):
  """(audio_mel [B*A, n_mels, n_frames] float32, audio_lengths [B*A] int32); slot b*A + a.

  n_frames < 3000: the first frames of the 30 s window only (a training run's mel crop; exact for
  clips that fit it, and the caller checks that they do)."""
  n_slots = len(examples) * max_audios
  n_samples = min(N_SAMPLES, (n_frames + 2) * HOP_LENGTH)  # what log_mel_spectrogram reads
  waves = np.zeros((n_slots, n_samples), np.float32)
  lengths = np.zeros((n_slots,), np.int32)
  for b, example in enumerate(examples):
    if example is None:
      continue
    for a, (wave, frames) in enumerate(zip(example.waveforms, example.encoder_frames)):
      waves[b * max_audios + a] = pad_or_trim(wave, n_samples)
      lengths[b * max_audios + a] = frames
  with jax.default_device(_cpu()):  # never the accelerator: this runs in the input pipeline
    mel = np.array(log_mel_spectrogram(waves, n_mels=n_mels, n_frames=n_frames), dtype=np.float32)  # writable
  mel[lengths == 0] = 0.0  # absent audio slots carry no features
  assert mel.shape == (n_slots, n_mels, n_frames), mel.shape
  return mel, lengths


def _metadata(examples: Sequence[Encoded | None]) -> dict[str, np.ndarray]:
  present = [e is not None for e in examples]
  return {
      "example_mask": np.asarray(present, np.int32),
      "audio_seconds": np.asarray([e.audio_seconds if e else 0.0 for e in examples], np.float32),
      "num_tokens": np.asarray([len(e.ids) if e else 0 for e in examples], np.int32),
      "task_index": np.asarray([task_index(e.task) if e else -1 for e in examples], np.int32),
  }


def task_index(task: str) -> int:
  """Position of `task` in records.TASKS; -1 for conversations and tasks outside that list."""
  return TASKS.index(task) if task in TASKS else -1


def collate_train(examples: Sequence[Encoded | None], *, buckets: Sequence[int], max_audios: int,
                  n_mels: int, pad_id: int, mel_frames: int = 0) -> dict[str, np.ndarray]:
  """Right-padded training batch: input_ids, attention_mask, targets, loss_mask, audio_*, metadata.

  targets[t] = input_ids[t + 1] and loss_mask[t] = 1 iff that target is an answer token or the final
  eod (so the loss is sum(loss_mask * xent(logits[t], targets[t])) / sum(loss_mask)).
  mel_frames > 0: only that many mel frames are computed (see `audio_features`).
  """
  longest = max([len(e.ids) for e in examples if e is not None], default=1)
  seq = pick_bucket(longest, buckets)
  batch = len(examples)
  input_ids = np.full((batch, seq), pad_id, np.int32)
  attention = np.zeros((batch, seq), np.int32)
  targets = np.full((batch, seq), pad_id, np.int32)
  loss_mask = np.zeros((batch, seq), np.int32)
  for b, example in enumerate(examples):
    if example is None:
      continue
    n = len(example.ids)
    input_ids[b, :n] = example.ids
    attention[b, :n] = 1
    targets[b, :n - 1] = example.ids[1:]
    loss_mask[b, :n - 1] = example.loss_mask[1:]
  mel, lengths = audio_features(examples, max_audios, n_mels, int(mel_frames) or N_FRAMES)
  return {"input_ids": input_ids, "attention_mask": attention, "targets": targets,
          "loss_mask": loss_mask, "audio_mel": mel, "audio_lengths": lengths, **_metadata(examples)}


def collate_eval(examples: Sequence[Encoded | None], *, buckets: Sequence[int], max_audios: int,
                 n_mels: int, pad_id: int) -> dict[str, np.ndarray]:
  """Left-padded prompt batch: input_ids, attention_mask, positions, audio_*, metadata."""
  longest = max([len(e.ids) for e in examples if e is not None], default=1)
  seq = pick_bucket(longest, buckets)
  batch = len(examples)
  input_ids = np.full((batch, seq), pad_id, np.int32)
  attention = np.zeros((batch, seq), np.int32)
  for b, example in enumerate(examples):
    if example is None:
      continue
    n = len(example.ids)
    input_ids[b, seq - n:] = example.ids
    attention[b, seq - n:] = 1
  positions = np.maximum(np.cumsum(attention, axis=1) - 1, 0).astype(np.int32)
  mel, lengths = audio_features(examples, max_audios, n_mels)
  return {"input_ids": input_ids, "attention_mask": attention, "positions": positions,
          "audio_mel": mel, "audio_lengths": lengths, **_metadata(examples)}


def pad_batch_to(batch: dict[str, np.ndarray], seq_len: int, pad_id: int) -> dict[str, np.ndarray]:
  """A right-padded training batch widened to `seq_len` tokens (e.g. the bucket agreed by all hosts)."""
  current = batch["input_ids"].shape[1]
  if seq_len < current:
    raise ValueError(f"pad_batch_to: cannot shrink a batch of {current} tokens to {seq_len}")
  if seq_len == current:
    return batch
  extra = ((0, 0), (0, seq_len - current))
  out = dict(batch)
  for key, value in (("input_ids", pad_id), ("targets", pad_id), ("attention_mask", 0), ("loss_mask", 0)):
    out[key] = np.pad(batch[key], extra, constant_values=value)
  return out
