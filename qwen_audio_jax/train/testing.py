"""Small fixtures for training tests: a mini Qwen-Audio config and hand-built batches.

The mini model keeps the Qwen-Audio architecture (both towers, projector, audio bos/eos) with a
4096-token vocabulary (audio/pad ids remapped below it), so its embedding and lm_head are just over
1 MB each — large enough for the "no big parameter left replicated" check.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from qwen_audio_jax.audio import lengths as audio_lengths
from qwen_audio_jax.train import defaults

MINI_VOCAB = 4096
MINI_MODEL = dict(
    decoder=dict(vocab_size=MINI_VOCAB), audio_start_id=4000, audio_end_id=4001, audio_pad_id=4002,
    pad_id=4003)


def mini_config(**train) -> ml_collections.ConfigDict:
  """Base run config with the mini model and small optimizer settings."""
  c = defaults.base_config()
  c.model = defaults.model_block("tiny-qwen-audio", **MINI_MODEL)
  c.optim.lr, c.optim.warmup_steps = 1e-3, 1
  for k, v in train.items():
    c.train[k] = v
  return c


def batch(model_cfg, seed: int, batch_size: int = 8, seq_len: int = 64, mel_frames: int = 192) -> dict:
  """Right-padded batch, one audio per example: <audio> pad×n </audio> prompt answer; loss on the answer
  tokens (targets = next ids), like the data pipeline's training batches."""
  r = np.random.default_rng(seed)
  cfg = model_cfg
  ids = np.full((batch_size, seq_len), cfg.pad_id, np.int32)
  attn = np.zeros((batch_size, seq_len), np.int32)
  targets = np.full((batch_size, seq_len), cfg.pad_id, np.int32)
  loss_mask = np.zeros((batch_size, seq_len), np.int32)
  mel = np.zeros((batch_size, cfg.encoder.n_mels, mel_frames), np.float32)
  lengths = np.zeros((batch_size,), np.int32)
  for b in range(batch_size):
    frames = int(r.integers(mel_frames // 3, mel_frames - 16))
    t = audio_lengths.encoder_frames(frames)
    n = audio_lengths.pooled_frames(t)
    prompt = list(r.integers(0, 3000, 3))
    answer = list(r.integers(0, 3000, int(r.integers(2, 6))))
    seq = [cfg.audio_start_id] + [cfg.audio_pad_id] * n + [cfg.audio_end_id] + prompt + answer
    if len(seq) > seq_len:
      raise ValueError(f"testing.batch: {len(seq)} tokens > seq_len={seq_len}")
    k = len(seq)
    ids[b, :k], attn[b, :k] = seq, 1
    targets[b, :k - 1] = seq[1:]
    loss_mask[b, k - 1 - len(answer):k - 1] = 1
    mel[b, :, :frames] = r.standard_normal((cfg.encoder.n_mels, frames))
    lengths[b] = t
  return dict(input_ids=ids, attention_mask=attn, targets=targets, loss_mask=loss_mask, audio_mel=mel,
              audio_lengths=lengths)


def write_user_manifests(folder: str, n_train: int = 6) -> dict[str, str]:
  """A user's data in miniature: short wav clips and jsonl manifests, as someone would bring them.

  train.jsonl  task manifest ({"audio", "task", "lang", "text"}; relative paths), n_train clips
  dev.jsonl    Qwen-Audio eval manifest ({"audio", "prompt", "gt", "source"}), ONE held-out clip
  Returns {"train": path, "dev": path, "clip": a clip path}.
  """
  import json  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel

  from qwen_audio_jax.data import synthetic  # pylint: disable=import-outside-toplevel
  os.makedirs(os.path.join(folder, "clips"), exist_ok=True)
  tasks = ("asr", "asc", "aqa")
  rows = []
  for i in range(n_train):
    record = synthetic.generate(tasks[i % len(tasks)], i)
    name = f"clips/train-{i}.wav"
    with open(os.path.join(folder, name), "wb") as f:
      f.write(record["audio"])
    rows.append({"audio": name, "task": record["task"], "lang": record["lang"], "text": record["text"],
                 **({"question": record["question"]} if record["question"] else {})})
  held_out = synthetic.generate("asr", 0, split="validation")
  with open(os.path.join(folder, "clips", "dev-0.wav"), "wb") as f:
    f.write(held_out["audio"])
  dev = {"audio": "clips/dev-0.wav", "gt": held_out["text"], "source": "dev",
         "prompt": "<|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>"}
  paths = {"train": os.path.join(folder, "train.jsonl"), "dev": os.path.join(folder, "dev.jsonl"),
           "clip": os.path.join(folder, "clips", "dev-0.wav")}
  with open(paths["train"], "w", encoding="utf-8") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  with open(paths["dev"], "w", encoding="utf-8") as f:
    f.write(json.dumps(dev) + "\n")
  return paths
