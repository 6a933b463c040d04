"""What the model would see for one clip: front end → audio tokens → task prompt → token ids.

    python -m qwen_audio_jax.demo [--audio=FILE] [--task=asr] [--family=qwen-audio] [--long_audio=error]

Runs the real mel front end, tokenizer and prompt builder (no model weights needed) and prints the
clip record (true duration, truncation), the log-mel statistics, the exact prompt of Qwen-Audio's eval
script for the task and the token layout the LLM receives after audio expansion.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from qwen_audio_jax import audio as audio_lib
from qwen_audio_jax import prompts, tokenizer
from qwen_audio_jax.assets import JFK_FLAC
from qwen_audio_jax.embed import check_audio_tokens

_TASK_FIELDS = {"asr": {"lang": "en"}, "s2tt": {"src": "en", "tgt": "de"}, "srwt": {"lang": "en"},
                "aqa": {"question": "What is the speaker talking about?"}}


def _summarise_ids(ids: list[int], tok) -> str:
  """Run-length view of an id sequence: long runs of one id are shown as `id × count`."""
  parts, i = [], 0
  while i < len(ids):
    j = i
    while j < len(ids) and ids[j] == ids[i]:
      j += 1
    text = tok.decode([ids[i]])
    parts.append(f"{ids[i]}×{j - i} {text!r}" if j - i > 2 else " ".join(
        f"{x} {tok.decode([x])!r}" for x in ids[i:j]))
    i = j
  return "\n    ".join(parts)


def run(audio_path: str, task: str, family: str, policy: str, n_mels: int) -> dict:
  """Processes one clip; returns the numbers it printed (used by tests)."""
  mel, info = audio_lib.features_for_clip(audio_path, n_mels=n_mels, policy=policy, family=family)
  check_audio_tokens(info, family)
  mel = np.asarray(mel)
  print(f"clip        {info.source}")
  print(f"  duration  {info.duration_s:.2f} s true, {info.processed_duration_s:.2f} s processed, "
        f"policy={info.policy}, truncated={info.truncated}, windows={info.n_chunks}")
  for k, w in enumerate(info.windows):
    print(f"  window {k}  offset {w.offset_s:.2f} s: {w.mel_frames} mel frames → T={w.encoder_frames} "
          f"encoder frames → {w.audio_tokens} audio tokens")
  print(f"log-mel     shape {mel.shape}, min {mel.min():.3f}, max {mel.max():.3f}, mean {mel.mean():.3f}")

  tok = tokenizer.get_tokenizer(family)
  counts = [w.audio_tokens for w in info.windows]
  if family == "qwen-audio":
    names = [info.source] if len(counts) == 1 else [f"{info.source}@{o:.0f}s" for o in info.offsets_s]
    text = "".join(f"<audio>{name}</audio>" for name in names)
    text += prompts.task_tags(task, **_TASK_FIELDS.get(task, {}))
    ids = prompts.expand_audio(tok.encode(text), counts, tok)
  else:
    messages = [{"role": "user", "content": [{"type": "audio", "audio_url": info.source}] * len(counts)
                 + [{"type": "text", "text": "Transcribe the speech."}]}]
    text = prompts.render_qwen2_audio_chat(messages)
    ids = prompts.make_qwen2_audio_context(tok, messages, counts)
  prompts.check_audio_spans(ids, counts, tok)
  print(f"prompt      {text}")
  print(f"token ids   {len(ids)} ids ({sum(counts)} audio placeholders), tokenizer vocab {tok.vocab_size}")
  print(f"    {_summarise_ids(ids, tok)}")
  return {"n_ids": len(ids), "audio_tokens": counts, "duration_s": info.duration_s, "mel_shape": mel.shape}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--audio", default=str(JFK_FLAC), help="audio file (default: the shipped jfk.flac)")
  parser.add_argument("--task", default="asr", choices=sorted(prompts.TASKS))
  parser.add_argument("--family", default="qwen-audio", choices=["qwen-audio", "qwen2-audio"])
  parser.add_argument("--long_audio", "--policy", dest="long_audio", default="error", choices=audio_lib.POLICIES,
                      help="audio over 30 s: error | truncate | chunk (--policy is a deprecated alias)")
  args = parser.parse_args(argv)
  n_mels = 80 if args.family == "qwen-audio" else 128
  try:
    run(args.audio, args.task, args.family, args.long_audio, n_mels)
  except (audio_lib.AudioError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
