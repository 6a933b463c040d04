"""PyTorch checkpoint -> project Orbax checkpoint.

  python conversion/convert.py --source=hf-qwen2-audio --input=PATH --output=DIR [--dtype=bfloat16]
  python conversion/convert.py --source=compose --whisper=large-v2.pt --qwen=Qwen-7B/ --output=DIR
  python conversion/convert.py --source=compose --whisper=large-v2.pt --qwen=Qwen-7B/ --weak=tiny.pt --weak=base.pt ...
  (MoWE: Whisper encoders as weak encoders; an export's mowe.safetensors / encoder_petl.safetensors are read back)
  python conversion/convert.py --source=openai-whisper --input=large-v3.pt --tokenizer=multilingual.tiktoken ...
  add --verify to run conversion/verify.py against the input afterwards.

Sources: openai-whisper (.pt with dims), hf-whisper, hf-qwen (Qwen-7B naming), hf-qwen-audio, hf-qwen2-audio;
single or sharded safetensors / pytorch_model*.bin. Any problem -> one line on stderr, exit 2, no output.
Whisper checkpoints keep a tokenizer file in source_assets/ (an openai .pt has none: --tokenizer, or
openai-whisper's when installed) and a decoding record in metadata.json["generation"] (whisper_assets.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile

if __package__ in (None, ""):  # run as a script: make `conversion` and `qwen_audio_jax` importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from conversion import engine, extras, hf_configs, record, whisper_assets  # noqa: E402
from conversion.errors import ConversionError  # noqa: E402
from conversion.maps import MAPS  # noqa: E402
from conversion.readers import TensorSource  # noqa: E402
from qwen_audio_jax import checkpoint_io  # noqa: E402
from qwen_audio_jax.model.config import ModelConfig, unpadded  # noqa: E402


def staging_dir(output: str) -> str:
  """A scratch folder next to `output` (same filesystem) for the memory-mapped arrays."""
  parent = os.path.dirname(os.path.abspath(output))
  os.makedirs(parent, exist_ok=True)
  return tempfile.mkdtemp(prefix=os.path.basename(os.path.abspath(output)) + ".staging-", dir=parent)


def open_source(flag: str, path: str):
  """(TensorSource, ModelConfig, raw config) after checking the flag against what the files look like."""
  if flag not in hf_configs.SOURCES:
    raise ConversionError(f"unknown --source={flag}; known: {', '.join(hf_configs.SOURCES + ('compose',))}")
  if not os.path.exists(path):
    raise ConversionError(f"--input={path}: no such file or directory")
  hf_configs.check_source_flag(flag, path)  # config-level check before opening any weights
  source = TensorSource(path)
  hf_configs.check_source_flag(flag, path, source.dims)
  cfg, raw = hf_configs.source_config(flag, path, source.dims)
  return source, cfg, raw


def pad_vocab(cfg: ModelConfig, vocab_pad_to: int) -> ModelConfig:
  """`cfg` with the LLM's vocabulary rows padded to a multiple of `vocab_pad_to` (1: unchanged)."""
  if vocab_pad_to == 1:
    return cfg
  if vocab_pad_to < 1:
    raise ConversionError(f"--vocab_pad_to={vocab_pad_to} must be >= 1")
  if cfg.decoder is None:
    raise ConversionError(f"--vocab_pad_to={vocab_pad_to}: a {cfg.family} checkpoint has no vocabulary")
  return cfg.replace(decoder=dataclasses.replace(cfg.decoder, vocab_pad_to=vocab_pad_to))


FUSED_QKV_SOURCES = ("hf-qwen", "hf-qwen-audio")  # checkpoints whose q/k/v are one tensor (v1 c_attn)


def check_fused_qkv_source(flag: str) -> None:
  """`--fused_qkv` needs a source that stores c_attn whole (checked before anything is read)."""
  if flag not in FUSED_QKV_SOURCES:
    raise ConversionError(f"--fused_qkv: --source={flag} stores q/k/v as separate tensors; the fused layout "
                          f"converts from Qwen v1's c_attn ({', '.join(FUSED_QKV_SOURCES)}, compose)")


def fuse_qkv(cfg: ModelConfig, flag: str) -> ModelConfig:
  """`cfg` with the decoder's fused q|k|v layout (`--fused_qkv`), for sources that store c_attn whole."""
  check_fused_qkv_source(flag)
  try:
    return cfg.replace(decoder=dataclasses.replace(cfg.decoder, fused_qkv=True))
  except ValueError as e:
    raise ConversionError(f"--fused_qkv: {e}") from None


def convert(flag: str, path: str, output: str, dtype: str = "float32", overwrite: bool = False,
            log=print, tokenizer: str | None = None, vocab_pad_to: int = 1, fused_qkv: bool = False) -> str:
  """Converts one source checkpoint; returns the output directory. `tokenizer`: Whisper only, a tokenizer
  file to keep with the checkpoint (see module doc). With `vocab_pad_to` > 1 the embedding and lm_head get
  zero rows up to a multiple of it (the config records the true vocab_size). `fused_qkv`: the decoder's
  q/k/v as one kernel (`DecoderConfig.fused_qkv`), Qwen v1 sources only."""
  if os.path.exists(output) and not overwrite:
    raise ConversionError(f"--output={output} already exists (pass --overwrite to replace it)")
  if fused_qkv:
    check_fused_qkv_source(flag)
  source, cfg, raw = open_source(flag, path)
  if fused_qkv:
    cfg = fuse_qkv(cfg, flag)
  blocks, extra_arrays = extras.read(path)  # MoWE / encoder-PETL parts written beside an export
  cfg = pad_vocab(cfg.replace(param_dtype=dtype, **blocks), vocab_pad_to)
  try:
    shapes = checkpoint_io.param_shapes(cfg)  # the padded tree; the source matches the unpadded one
  except ValueError as e:
    raise ConversionError(f"{path}: {e}") from None
  base = unpadded(extras.base_config(cfg))
  plan = engine.plan(source, MAPS[flag], base, checkpoint_io.param_shapes(base), flag)
  engine.check_tied(plan)
  if cfg.family != "whisper" and tokenizer is not None:
    raise ConversionError(f"--tokenizer is for Whisper sources only, not --source={flag}")
  tok_file = generation = None
  if cfg.text_decoder is not None:
    tok_file = whisper_assets.tokenizer_file(flag, cfg, tokenizer)
    generation = whisper_assets.generation_record(flag, path, cfg, tok_file)
  log(f"{flag}: {len(plan.matches)} tensors -> {len(shapes)} parameters ({cfg.family}), "
      f"{len(plan.carried)} carried through")
  staging = staging_dir(output)
  try:
    arrays = engine.allocate(shapes, engine.DTYPES[dtype], staging)
    filled: set = set()
    engine.fill(plan, arrays, filled, log)
    fill_extras(arrays, filled, extra_arrays, path)
    engine.check_filled(arrays, filled)
    entry = record.source_entry(flag, source, raw, plan)
    meta = record.base_record([entry], cfg.family, dtype)

    def extra(tmp):
      record.write_carried(tmp, source, plan.carried, flag)
      assets = record.copy_assets(tmp, path)
      if tok_file is not None:
        assets = sorted(set(assets) | {record.copy_asset(tmp, tok_file)})
      out = {"source_assets": assets,
             "tokenizer": {**meta["tokenizer"], "files": [a for a in assets if record.is_tokenizer_file(a)]}}
      if generation is not None:
        out["generation"] = generation
        if not out["tokenizer"]["files"]:
          log("no tokenizer kept with this checkpoint: pass --tokenizer=PATH (e.g. openai-whisper's "
              "multilingual.tiktoken) to decode text with it")
      return out

    checkpoint_io.save_model_checkpoint(output, cfg, checkpoint_io.unflatten(arrays), meta, overwrite=overwrite,
                                        write_extra=extra)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  log(f"wrote {output}")
  return output


def fill_extras(arrays: dict, filled: set, extra_arrays: dict, where: str) -> None:
  """Copies MoWE / encoder-PETL tensors (conversion/extras.py) into their parameters, shapes checked."""
  for name, value in extra_arrays.items():
    if name not in arrays:
      raise ConversionError(f"{where}: {name} is not a parameter of the configured MoWE / encoder-PETL model")
    if tuple(value.shape) != tuple(arrays[name].shape):
      raise ConversionError(f"{where}: {name} has shape {list(value.shape)}, config says {list(arrays[name].shape)}")
    arrays[name][...] = value.astype(arrays[name].dtype)
    filled.add((name, None))


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--source", required=True, help=f"one of {', '.join(hf_configs.SOURCES)}, compose")
  p.add_argument("--input", help="checkpoint file or folder (not for compose)")
  p.add_argument("--output", required=True, help="output checkpoint directory (must not exist)")
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="stored parameter dtype")
  p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
  p.add_argument("--whisper", help="compose: openai .pt file or transformers Whisper folder")
  p.add_argument("--qwen", help="compose: Qwen-7B folder (its own naming)")
  p.add_argument("--weak", action="append", default=[],
                 help="compose: a Whisper checkpoint (.pt or folder) to add as a MoWE weak encoder (repeat for a pool)")
  p.add_argument("--mowe_top_k", type=int, default=1, help="compose with --weak: encoders selected per clip")
  p.add_argument("--seed", type=int, default=0, help="compose: seed of the new projector/bos-eos/vocab rows")
  p.add_argument("--vocab_size", type=int, default=None, help="compose: LLM vocabulary after adding audio rows")
  p.add_argument("--tokenizer", default=None,
                 help="Whisper: tokenizer file (.tiktoken or tokenizer.json) to keep in the checkpoint")
  p.add_argument("--vocab_pad_to", type=int, default=1,
                 help="pad the LLM's embedding/lm_head rows with zeros to a multiple of this (e.g. 128 x tensor)")
  p.add_argument("--fused_qkv", action="store_true",
                 help="keep Qwen v1's c_attn as one q|k|v kernel (model decoder.fused_qkv; hf-qwen, hf-qwen-audio, compose)")
  p.add_argument("--verify", action="store_true", help="run conversion/verify.py against --input afterwards")
  return p


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  try:
    if args.source == "compose":
      from conversion import compose  # pylint: disable=import-outside-toplevel
      if not (args.whisper and args.qwen):
        raise ConversionError("--source=compose needs --whisper=PATH and --qwen=PATH")
      if args.verify or args.tokenizer:
        raise ConversionError("--verify and --tokenizer are not available for --source=compose")
      compose.compose(args.whisper, args.qwen, args.output, args.dtype, args.seed, args.vocab_size,
                      overwrite=args.overwrite, vocab_pad_to=args.vocab_pad_to, weak_paths=args.weak,
                      mowe_top_k=args.mowe_top_k, fused_qkv=args.fused_qkv)
      return 0
    if args.weak:
      raise ConversionError("--weak is for --source=compose (an export's MoWE parts are read from mowe.safetensors)")
    if not args.input:
      raise ConversionError("--input=PATH is required")
    convert(args.source, args.input, args.output, args.dtype, args.overwrite, tokenizer=args.tokenizer,
            vocab_pad_to=args.vocab_pad_to, fused_qkv=args.fused_qkv)
  except (ConversionError, checkpoint_io.CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except OSError as e:  # disk full, permissions, I/O errors while writing: the partial output is already removed
    print(f"error: --output={args.output}: {e.strerror or e} ({e.filename or 'writing the checkpoint'}); "
          "nothing was written", file=sys.stderr)
    return 2
  if args.verify:
    from conversion import verify  # pylint: disable=import-outside-toplevel
    return verify.main([f"--checkpoint={args.output}", f"--reference={args.input}", f"--source={args.source}"])
  return 0


if __name__ == "__main__":
  sys.exit(main())
