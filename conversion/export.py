"""Project Orbax checkpoint -> PyTorch checkpoint (safetensors + config.json, or an openai .pt).

  python conversion/export.py --checkpoint=DIR --target=hf-qwen2-audio --output=OUT [--dtype=source]

DIR: a converted checkpoint, a training run's WORKDIR (best evaluation, else latest state; choose with
--step=best|latest|N), or WORKDIR/best/<step>, WORKDIR/checkpoints/<step> (`checkpoint_io.resolve`). A
LoRA run is exported with its adapters merged into the base weights. MoWE weak encoders/routers and
encoder-PETL adapters/prompts (no HF model has them) go beside the HF files: mowe.safetensors +
mowe_config.json, encoder_petl.safetensors + encoder_petl_config.json (layout: conversion/extras.py).

Targets: hf-whisper, openai-whisper (OUT is a .pt file), hf-qwen, hf-qwen-audio, hf-qwen2-audio; the
checkpoint's family must match. Tensors carried through at conversion (e.g. Whisper's text decoder) are
restored (renamed between the openai and transformers Whisper namings). `--dtype=source` (default)
writes every tensor in the dtype it had in the source (when the source had this target's naming; else
the stored dtype), so source -> convert(fp32) -> export is bit-exact. Padded vocabulary rows
(`decoder.vocab_pad_to`) are stripped: exports always have `vocab_size` rows.
Parameters are read one stacked leaf at a time; output is sharded (--shard_gb) with an index json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import sys
import tempfile

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

from conversion import engine, extras, hf_configs, transforms  # noqa: E402
from conversion.errors import ConversionError  # noqa: E402
from conversion.maps import MAPS, whisper  # noqa: E402
from conversion.readers import numpy_to_torch  # noqa: E402  (torch only for the openai .pt)
from qwen_audio_jax import checkpoint_io  # noqa: E402
from qwen_audio_jax.model.config import unpadded  # noqa: E402
from qwen_audio_jax.files import follow_umask  # noqa: E402

TARGETS = tuple(MAPS)


def _renamer(src_format: str, target: str):
  """Function renaming a carried tensor from `src_format` naming to `target` naming (None = drop)."""
  if src_format == target:
    return lambda name: name
  pair = {("openai-whisper", "hf-whisper"): (0, 1), ("hf-whisper", "openai-whisper"): (1, 0)}.get((src_format, target))
  if pair is None:
    return lambda name: None
  table = []
  for row in whisper.decoder_renames():
    a, b = row[pair[0]], row[pair[1]]
    table.append((re.compile(re.escape(a).replace(re.escape("{i}"), r"(\d+)") + r"\Z"), b))

  def rename(name):
    for regex, template in table:
      m = regex.match(name)
      if m:
        return template.replace("{i}", m.group(1)) if m.groups() else template
    return None
  return rename


class _Shards:
  """Accumulates tensors and writes safetensors shards of at most `limit` bytes (+ index json)."""

  def __init__(self, directory: str, limit: int):
    self.directory, self.limit = directory, limit
    self.pending, self.size, self.files, self.weight_map, self.total = {}, 0, [], {}, 0

  def add(self, name: str, tensor: np.ndarray) -> None:
    nbytes = tensor.nbytes
    if self.pending and self.size + nbytes > self.limit:
      self.flush()
    self.pending[name] = np.ascontiguousarray(tensor)
    self.size += nbytes
    self.total += nbytes

  def flush(self) -> None:
    if self.pending:
      fname = f"part-{len(self.files):05d}.safetensors"
      save_file(self.pending, os.path.join(self.directory, fname), metadata={"format": "pt"})
      self.files.append((fname, list(self.pending)))
      self.pending, self.size = {}, 0

  def finish(self) -> None:
    self.flush()
    n = len(self.files)
    for k, (fname, names) in enumerate(self.files):
      final = "model.safetensors" if n == 1 else f"model-{k + 1:05d}-of-{n:05d}.safetensors"
      os.rename(os.path.join(self.directory, fname), os.path.join(self.directory, final))
      self.weight_map.update({name: final for name in names})
    if n > 1:
      with open(os.path.join(self.directory, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": self.total}, "weight_map": dict(sorted(self.weight_map.items()))}, f,
                  indent=2)


def _source_dtypes(meta: dict, target: str) -> dict[str, str]:
  out = {}
  for s in meta["sources"]:
    if s["format"] == target:
      out.update({n: t["dtype"] for n, t in {**s.get("mapped", {}), **s.get("carried", {})}.items()})
  return out


def _splits_qkv(cfg, name_map) -> bool:
  """True when `cfg` has the fused q|k|v layout and `name_map` no rule for it (Qwen2 naming)."""
  fused = cfg.decoder is not None and cfg.decoder.fused_qkv
  return fused and not any(t.endswith("/attn/qkv/kernel") for rule in name_map.rules for t in rule.targets)


def _split_reader(read):
  """`read` of a fused checkpoint that also answers the separate `.../attn/{q,k,v}/...` paths (slices of
  `.../attn/qkv/...`, read once per part: peak memory stays one stacked leaf)."""

  def split_read(paths):
    fused = {p: re.sub(r"/attn/[qkv]/", "/attn/qkv/", p) for p in paths}
    got = read(sorted(set(fused.values())))
    return {p: (got[f][..., "qkv".index(p.split("/")[-2]), :] if f != p else got[p]) for p, f in fused.items()}

  return split_read


def tensors(checkpoint: str, target: str, dtype: str, log=print, step=None):
  """Yields (name, numpy array) of the whole exported model, one rule (all its layers) at a time."""
  ckpt = checkpoint_io.resolve(checkpoint, step)
  cfg, meta = ckpt.config, ckpt.metadata
  name_map = MAPS[target]
  if name_map.family != cfg.family:
    raise ConversionError(f"--target={target} needs a {name_map.family} checkpoint; {checkpoint} is {cfg.family}")
  shapes = {p: s for p, (s, _) in ckpt.stored().items()}
  checkpoint_io.check_shapes(shapes, cfg, ckpt.path)
  read = ckpt.read
  if _splits_qkv(cfg, name_map):  # a fused q|k|v model into a naming with separate q/k/v tensors
    cfg = cfg.replace(decoder=dataclasses.replace(cfg.decoder, fused_qkv=False))
    shapes, read = checkpoint_io.param_shapes(cfg), _split_reader(ckpt.read)
  true_shapes = checkpoint_io.param_shapes(unpadded(cfg))  # padded vocabulary rows are not exported
  src_dtypes, fallback = _source_dtypes(meta, target), meta["dtype"]
  out_dtype = lambda name: np.dtype(dtype if dtype != "source" else src_dtypes.get(name, fallback))
  rules = engine.active_rules(name_map, shapes)
  cache: dict[str, np.ndarray] = {}
  for rule in rules:
    for path in list(cache):
      if path not in rule.targets:
        del cache[path]
    missing = [t for t in rule.targets if t not in cache]
    cache.update({p: x[tuple(slice(0, n) for n in true_shapes[p])]
                  for p, x in (read(missing) if missing else {}).items()})
    transform = transforms.get(rule.transform)
    for layer in range(shapes[rule.targets[0]][0]) if rule.stacked else [None]:
      parts = tuple(cache[t] if layer is None else cache[t][layer] for t in rule.targets)
      name = rule.name(layer)
      # A copy, so that a pending shard never pins a whole stacked leaf.
      yield name, np.array(transform.backward(parts, cfg), dtype=out_dtype(name), order="C", copy=True)
  cache.clear()
  carried_path = os.path.join(ckpt.path, checkpoint_io.CARRIED_FILE)
  if ckpt.kind == "converted" and os.path.exists(carried_path):
    with safe_open(carried_path, framework="np") as f:
      src_format = (f.metadata() or {}).get("source", "")
      rename, dropped = _renamer(src_format, target), []
      for name in f.keys():
        new = rename(name)
        if new is None:
          dropped.append(name)
          continue
        tensor = f.get_tensor(name)
        yield new, (tensor if dtype == "source" else tensor.astype(out_dtype(name)))
      if dropped:
        log(f"carried tensors with no {target} name, not exported: {len(dropped)} (e.g. {dropped[0]})")


def default_target(family: str) -> str:
  return {"whisper": "hf-whisper", "qwen": "hf-qwen", "qwen-audio": "hf-qwen-audio",
          "qwen2-audio": "hf-qwen2-audio"}[family]


def export(checkpoint: str, target: str | None, output: str, dtype: str = "source", shard_gb: float = 4.0,
           overwrite: bool = False, log=print, step=None) -> str:
  ckpt = checkpoint_io.resolve(checkpoint, step)
  cfg, meta = ckpt.config, ckpt.metadata
  target = target or default_target(cfg.family)
  if target not in TARGETS:
    raise ConversionError(f"unknown --target={target}; known: {', '.join(TARGETS)}")
  if os.path.exists(output) and not overwrite:
    raise ConversionError(f"--output={output} already exists (pass --overwrite to replace it)")
  checkpoint = ckpt.path  # a run WORKDIR resolved to one step folder: every read below sees the same step
  if ckpt.step is not None:
    log(f"exporting {ckpt.kind} step {ckpt.step} of {meta['run']['workdir']}"
        + (" (LoRA adapters merged)" if meta.get("lora") else ""))
  config = hf_configs.target_config(target, cfg, meta["sources"]) if cfg.family == MAPS[target].family else None
  if target == "openai-whisper":
    if not output.endswith(".pt"):
      raise ConversionError(f"--target=openai-whisper writes one file: --output must end with .pt, got {output}")
    import torch  # pylint: disable=import-outside-toplevel
    state = {name: numpy_to_torch(array) for name, array in tensors(checkpoint, target, dtype, log)}
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(output) + ".tmp-", dir=os.path.dirname(os.path.abspath(output)))
    os.close(fd)
    torch.save({"dims": config, "model_state_dict": state}, tmp)
    follow_umask(tmp)  # mkstemp made it 0600
    os.replace(tmp, output)
    log(f"wrote {output} ({len(state)} tensors)")
    return output
  with checkpoint_io.atomic_directory(output, overwrite=overwrite) as tmp:
    shards = _Shards(tmp, int(shard_gb * (1 << 30)))
    names = set()
    for name, tensor in tensors(checkpoint, target, dtype, log):
      names.add(name)
      shards.add(name, tensor)
    shards.finish()
    _check_complete(target, names, config)
    extra_files = extras.write(tmp, cfg, list(ckpt.stored()), ckpt.read)  # MoWE / encoder-PETL parts
    if extra_files:
      log(f"MoWE / encoder-PETL parameters beside the checkpoint: {', '.join(extra_files)}")
    with open(os.path.join(tmp, "config.json"), "w") as f:
      json.dump(config, f, indent=2)
    if any(s["format"] == target for s in meta["sources"]):
      _copy_assets(_assets_home(ckpt), tmp)
  log(f"wrote {output} ({len(names)} tensors, {len(shards.files)} file(s))")
  return output


def _check_complete(target: str, names: set, config: dict) -> None:
  """A Whisper export must contain the text decoder (transformers cannot load the model without it)."""
  if target == "hf-whisper" and not any(n.startswith("model.decoder.") for n in names):
    raise ConversionError("cannot export hf-whisper: the checkpoint carries no Whisper text decoder "
                          "(convert from a full Whisper checkpoint)")


def _assets_home(ckpt) -> str:
  """The converted checkpoint whose source_assets/ (tokenizer, generation config) go with the export:
  itself, or for a run the converted checkpoint it started from."""
  init = ckpt.metadata.get("init") or {}
  return ckpt.path if ckpt.kind == "converted" else str(init.get("path", ""))


def _copy_assets(checkpoint: str, directory: str) -> None:
  src = os.path.join(checkpoint, checkpoint_io.ASSETS_DIR)
  if os.path.isdir(src):
    for name in os.listdir(src):
      if name != "config.json":
        shutil.copy2(os.path.join(src, name), os.path.join(directory, name))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="converted checkpoint, run WORKDIR or one of its steps")
  p.add_argument("--step", default=None, help="for a run WORKDIR: best | latest | N (default: best, else latest)")
  p.add_argument("--target", default=None, help=f"one of {', '.join(TARGETS)} (default: from the family)")
  p.add_argument("--output", required=True, help="output folder (a .pt file for openai-whisper)")
  p.add_argument("--dtype", default="source", choices=["source", "float32", "bfloat16", "float16"])
  p.add_argument("--shard_gb", type=float, default=4.0, help="max size of one safetensors shard")
  p.add_argument("--overwrite", action="store_true")
  args = p.parse_args(argv)
  try:
    export(args.checkpoint, args.target, args.output, args.dtype, args.shard_gb, args.overwrite, step=args.step)
  except (ConversionError, checkpoint_io.CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
