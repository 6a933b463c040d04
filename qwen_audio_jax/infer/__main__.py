"""`python -m qwen_audio_jax.infer`: answers from audio with a converted or trained checkpoint.

  python -m qwen_audio_jax.infer --checkpoint=DIR --audio=a.flac [--audio=b.wav ...] --task=asr --language=en
  python -m qwen_audio_jax.infer --checkpoint=DIR --audio=a.flac --prompt='<|audio_bos|><|AUDIO|><|audio_eos|>...'
  python -m qwen_audio_jax.infer --checkpoint=DIR --chat [--conversation=conv.json]   # interactive without a file
Checkpoints: Qwen-Audio(-Chat), Qwen2-Audio(-Instruct), and Whisper converted with its text decoder
(--task=asr, or --task=s2tt for Whisper's translation into English).
Prints each answer (or, with --json, one JSON object per input: text, ids, words, duration_s, truncated,
finish_reason, decode, ...). Bad input: one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from qwen_audio_jax.audio import POLICIES

TASK_NAMES = ("asr", "s2tt", "srwt", "aac", "asc", "ser", "aqa", "vsc", "mna")


class OneLineParser(argparse.ArgumentParser):
  """argparse with flag errors on one line (`error: --flag: cause`, exit 2) instead of usage + error."""

  def error(self, message):
    self.exit(2, f"error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
  p = OneLineParser(prog="python -m qwen_audio_jax.infer", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
  add = p.add_argument
  add("--checkpoint", required=True, help="converted checkpoint directory (conversion/convert.py output)")
  add("--audio", action="append", default=[], help="audio file; repeat for several (one answer each with --task)")
  add("--task", choices=TASK_NAMES, default=None, help="task prompt of the base model (default: none)")
  add("--language", default="en", help="audio language for asr/srwt, source language for s2tt (default: en)")
  add("--target_language", default=None, help="s2tt target language (default: none)")
  add("--question", default=None, help="aqa question (default: none)")
  add("--prompt", default=None, help="the model's own raw prompt text (default: none)")
  add("--chat", action="store_true", help="chat: interactive, or the conversation in --conversation")
  add("--conversation", default=None, help="chat: JSON file with a list of {role, content} messages")
  add("--system", default=None, help="chat: system message (default: the model's)")
  add("--json", action="store_true", help="print one JSON object per input instead of the text")
  add("--max_new_tokens", type=int, default=None, help="default: the task's eval budget (256 raw, 512 chat)")
  add("--num_beams", type=int, default=1, help="> 1: beam search (default: 1)")
  add("--length_penalty", type=float, default=1.0, help="beam search length penalty (default: 1.0)")
  add("--temperature", type=float, default=0.0, help="> 0: sampling (default: 0 = greedy)")
  add("--top_k", type=int, default=0, help="sampling: keep the k most likely tokens (default: 0 = off)")
  add("--top_p", type=float, default=1.0, help="sampling: nucleus mass (default: 1.0 = off)")
  add("--seed", type=int, default=0, help="sampling seed (default: 0)")
  add("--max_new_tokens_per_second", type=float, default=25.0,
      help="stop a row after this many tokens per second of audio (0 = off; default: 25)")
  add("--loop_guard_tokens", type=int, default=64,
      help="stop a row whose last N tokens repeat a short pattern (0 = off; default: 64)")
  add("--long_audio", choices=POLICIES, default="error", help="audio over 30 s: error | truncate | chunk")
  add("--chunk_overlap_s", type=float, default=0.0, help="--long_audio=chunk: seconds shared by windows")
  add("--dtype", choices=("float32", "bfloat16"), default=None, help="compute dtype (default: the checkpoint's)")
  add("--batch_size", type=int, default=8, help="rows decoded together (default: 8)")
  add("--vocab_path", default=None, help="tokenizer vocabulary (default: the checkpoint's)")
  add("-v", "--verbose", action="store_true", help="log compilations")
  return p


def _decode_options(args) -> dict:
  return {"max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams, "length_penalty": args.length_penalty,
          "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p, "seed": args.seed,
          "max_new_tokens_per_second": args.max_new_tokens_per_second, "loop_guard_tokens": args.loop_guard_tokens}


def _check_args(args) -> None:
  """Flag combinations and files, before any model work."""
  modes = sum([args.task is not None, args.prompt is not None, args.chat])
  if modes != 1:
    raise ValueError("choose exactly one of --task, --prompt or --chat")
  if args.task and not args.audio:
    raise ValueError("--task needs at least one --audio")
  if args.conversation and not args.chat:
    raise ValueError("--conversation needs --chat")
  for path in args.audio + ([args.conversation] if args.conversation else []):
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path}: no such file")
  if not os.path.isdir(args.checkpoint):
    raise FileNotFoundError(f"--checkpoint={args.checkpoint}: no such directory")


def _print(results, args, sources) -> None:
  for source, result in zip(sources, results):
    if args.json:
      print(json.dumps({"input": source, **result.as_json()}, ensure_ascii=False), flush=True)
    else:
      print(result.text if len(sources) == 1 else f"{source}\t{result.text}", flush=True)
    if result.finish_reason in ("audio_cap", "loop"):
      print(f"warning: {source}: generation stopped by the {result.finish_reason.replace('_', ' ')} guard",
            file=sys.stderr)


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  if not args.verbose:
    logging.getLogger("absl").setLevel(logging.WARNING)
  else:
    logging.basicConfig(level=logging.INFO)
  from qwen_audio_jax.infer import chat_cli, errors  # pylint: disable=import-outside-toplevel
  try:
    _check_args(args)
    from qwen_audio_jax.infer.pipeline import Pipeline  # pylint: disable=import-outside-toplevel
    pipe = Pipeline.from_checkpoint(args.checkpoint, dtype=args.dtype, max_batch=args.batch_size,
                                    long_audio=args.long_audio, chunk_overlap_s=args.chunk_overlap_s,
                                    vocab_path=args.vocab_path)
    options = _decode_options(args)
    if args.chat and not pipe.supports_chat:
      raise ValueError("Whisper checkpoints have no chat mode; use --task=asr or --task=s2tt")
    if args.chat:
      return chat_cli.run(pipe, args, options)
    if args.prompt is not None:
      results = pipe.generate(args.audio, prompt=args.prompt, **options)
      sources = [",".join(args.audio) or "prompt"]
    else:
      results = pipe.generate(args.audio, task=args.task, language=args.language,
                              target_language=args.target_language, question=args.question, **options)
      sources = args.audio
    _print(results, args, sources)
  except errors.USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
