"""Conversion failures: one clear line, non-zero exit, no output directory (CLI via subprocess); name maps
against the spec's tensor shapes for the real 7B presets (no weights needed).

Faults covered: wrong --source, missing / extra / mis-shaped tensor, a truncated file, a missing shard of an
index, a corrupted safetensors header, a shard truncated mid-way through the conversion, and a full disk
(ENOSPC injected into the parameter writer after part of the output was written)."""

import errno
import json

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from safetensors.torch import load_file, save_file  # noqa: E402

from conversion import convert, engine, export, hf_configs, tiny_models  # noqa: E402
from conversion.errors import ConversionError  # noqa: E402
from conversion.maps import MAPS  # noqa: E402
from conversion.readers import TensorInfo  # noqa: E402
from qwen_audio_jax import checkpoint_io  # noqa: E402
from qwen_audio_jax.model import get_config  # noqa: E402
from qwen_audio_jax.model.audio_encoder import sinusoids  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS = "model.safetensors"


def _variant(base, root, name, edit):
  """A copy of the Qwen2-Audio folder `base` whose safetensors went through `edit(state) -> state`."""
  folder = root / name
  folder.mkdir()
  for f in os.listdir(base):
    if f != WEIGHTS:
      (folder / f).write_bytes((base / f).read_bytes())
  edit_state = edit(load_file(str(base / WEIGHTS)))
  if edit_state is not None:
    save_file(edit_state, str(folder / WEIGHTS), metadata={"format": "pt"})
  return folder


def _drop(state):
  del state["audio_tower.layers.1.fc2.bias"]
  return state


def _extra(state):
  state["audio_tower.layers.0.extra.weight"] = torch.zeros(3)
  return state


def _reshape(state):
  state["language_model.model.layers.0.mlp.up_proj.weight"] = torch.zeros(161, 64)
  return state


CASES = {  # name: (edit, --source, substrings of the one-line error)
    "missing": (_drop, "hf-qwen2-audio", ["missing tensor audio_tower.layers.1.fc2.bias",
                                           "audio_encoder/layers/mlp/fc2/bias"]),
    "extra": (_extra, "hf-qwen2-audio", ["unexpected tensor audio_tower.layers.0.extra.weight", WEIGHTS]),
    "shape": (_reshape, "hf-qwen2-audio", ["language_model.model.layers.0.mlp.up_proj.weight", "[161, 64]",
                                            "[160, 64]"]),
    "truncated": (None, "hf-qwen2-audio", [WEIGHTS, "truncated"]),
    "wrong-source": (lambda s: s, "hf-whisper", ["wrong --source=hf-whisper", "hf-qwen2-audio"]),
    "missing-shard": ("missing_shard", "hf-qwen2-audio", ["model-00002-of-00002.safetensors"]),
    "bad-header": ("bad_header", "hf-qwen2-audio", [WEIGHTS]),
}


def _folder_case(kind, base, root, case):
  """Folders broken on disk rather than in their tensors."""
  folder = root / case
  if kind == "missing_shard":
    os.remove(_two_shards(base, folder))
  else:  # a safetensors header whose JSON is garbage (length prefix intact)
    folder = _variant(base, root, case, lambda s: s)
    data = bytearray((folder / WEIGHTS).read_bytes())
    data[8:40] = b"{\"x\": [1, 2, 3 garbage garbage "
    (folder / WEIGHTS).write_bytes(bytes(data))
  return folder


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
  """Runs convert.py once per case, all in parallel; {case: (returncode, stderr, output path)}."""
  root = tmp_path_factory.mktemp("bad")
  base = root / "base"
  tiny_models.hf_qwen2_audio(str(base))
  procs = {}
  for case, (edit, flag, _) in CASES.items():
    if isinstance(edit, str):
      folder = _folder_case(edit, base, root, case)
    elif edit is None:
      folder = _variant(base, root, case, lambda s: s)
      data = (folder / WEIGHTS).read_bytes()
      (folder / WEIGHTS).write_bytes(data[:len(data) * 2 // 3])
    else:
      folder = _variant(base, root, case, edit)
    out = root / "out" / case
    procs[case] = (subprocess.Popen(
        [sys.executable, os.path.join(REPO, "conversion", "convert.py"), f"--source={flag}", f"--input={folder}",
         f"--output={out}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO), out)
  return {case: (p.wait(), p.stderr.read(), out) for case, (p, out) in procs.items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_error_is_one_line_and_leaves_nothing(case, cli_runs):
  rc, stderr, out = cli_runs[case]
  lines = stderr.strip().splitlines()
  print(case, lines)
  assert rc == 2
  assert len(lines) == 1 and lines[0].startswith("error: ")
  for part in CASES[case][2]:
    assert part in lines[0]
  assert not out.exists()
  assert not out.parent.exists() or os.listdir(out.parent) == []  # no DIR.tmp-* / DIR.staging-* left


def _two_shards(base, folder):
  """`base`'s Qwen2-Audio checkpoint re-saved as two safetensors shards with an index."""
  import json
  folder.mkdir()
  for f in os.listdir(base):
    if f != WEIGHTS:
      (folder / f).write_bytes((base / f).read_bytes())
  state = load_file(str(base / WEIGHTS))
  names = sorted(state)
  shards = {"model-00001-of-00002.safetensors": names[:len(names) // 2],
            "model-00002-of-00002.safetensors": names[len(names) // 2:]}
  for shard, keys in shards.items():
    save_file({k: state[k] for k in keys}, str(folder / shard), metadata={"format": "pt"})
  index = {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
  (folder / "model.safetensors.index.json").write_text(json.dumps(index))
  return folder / "model-00002-of-00002.safetensors"


def _convert_while_truncating(folder, shard, out):
  """Runs the converter's CLI entry point; right after its first tensor is written into the staging arrays,
  `shard` is cut to half its size (a shard still being copied / truncated on a flaky mount)."""
  original = engine._write
  state = {"writes": 0}

  def write_then_truncate(*args, **kwargs):
    original(*args, **kwargs)
    state["writes"] += 1
    if state["writes"] == 1:
      os.truncate(shard, os.path.getsize(shard) // 2)

  engine._write = write_then_truncate
  sys.exit(convert.main(["--source=hf-qwen2-audio", f"--input={folder}", f"--output={out}"]))


def test_shard_truncated_after_writing_started_leaves_nothing(tmp_path):
  """Fails mid-way (staging arrays partly written), one line, exit 2, no output / staging / tmp folder."""
  base = tmp_path / "base"
  tiny_models.hf_qwen2_audio(str(base))
  shard = _two_shards(base, tmp_path / "sharded")
  out = tmp_path / "out" / "ckpt"
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), str(tmp_path / "sharded"), str(shard), str(out)],
                        capture_output=True, text=True, cwd=REPO, timeout=300,
                        env=dict(os.environ, PYTHONPATH=REPO))  # this checkout's packages, not an installed copy
  lines = proc.stderr.strip().splitlines()
  print(proc.returncode, lines[-3:])
  assert proc.returncode == 2, proc.stderr[-2000:]  # -7 (SIGBUS) if the memory-mapped read is not guarded
  assert len(lines) == 1 and lines[0].startswith("error: ")
  assert "model-00002-of-00002.safetensors" in lines[0] and "changed size while converting" in lines[0]
  assert not out.exists() and os.listdir(out.parent) == []  # no DIR.staging-* / DIR.tmp-* left


def _convert_with_full_disk(folder, out):
  """The converter's CLI entry point with a parameter writer that writes part of the output, then fails
  with ENOSPC (a disk filling up mid-write; no size-limited tmpfs needed)."""
  def write_then_fail(directory, params):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "partial.bin"), "wb") as f:
      f.write(b"\0" * 4096)
    del params
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), directory)

  checkpoint_io.write_params = write_then_fail
  sys.exit(convert.main(["--source=hf-qwen2-audio", f"--input={folder}", f"--output={out}"]))


def test_disk_full_is_one_line_and_leaves_nothing(tmp_path):
  base = tmp_path / "base"
  tiny_models.hf_qwen2_audio(str(base))
  out = tmp_path / "out" / "ckpt"
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--full-disk", str(base), str(out)],
                        capture_output=True, text=True, cwd=REPO, timeout=300, env=dict(os.environ, PYTHONPATH=REPO))
  lines = proc.stderr.strip().splitlines()
  print(proc.returncode, lines[-3:])
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert len(lines) == 1 and lines[0].startswith("error: ") and "No space left on device" in lines[0]
  assert str(out) in lines[0]
  assert not out.exists() and os.listdir(out.parent) == []  # no DIR.staging-* / DIR.tmp-* left


def test_export_refuses_other_family_and_bad_output(tmp_path):
  base = tmp_path / "q2a"
  tiny_models.hf_qwen2_audio(str(base))
  ckpt = convert.convert("hf-qwen2-audio", str(base), str(tmp_path / "ck"), log=lambda *a: None)
  with pytest.raises(ConversionError, match="needs a whisper checkpoint"):
    export.export(ckpt, "hf-whisper", str(tmp_path / "w"), log=lambda *a: None)
  with pytest.raises(ConversionError, match="must end with .pt"):
    export.export(ckpt, "openai-whisper", str(tmp_path / "w"), log=lambda *a: None)
  with pytest.raises(ConversionError, match="already exists"):
    export.export(ckpt, "hf-qwen2-audio", ckpt, log=lambda *a: None)
  assert not (tmp_path / "w").exists()
  os.remove(os.path.join(ckpt, checkpoint_io.CONFIG_FILE))
  with pytest.raises(checkpoint_io.CheckpointError, match="model_config.json missing"):
    checkpoint_io.load_model_checkpoint(ckpt)


PRESET_OF = {"openai-whisper": "whisper-large-v2", "hf-whisper": "whisper-large-v3", "hf-qwen": "qwen-7b",
             "hf-qwen-audio": "qwen-audio-7b", "hf-qwen2-audio": "qwen2-audio-7b"}
SPEC_SHAPES = {  # spec §2.7 / §3.5 / §8 (PyTorch layout)
    "hf-qwen-audio": {"transformer.audio.conv1.weight": (1280, 80, 3),
                      "transformer.audio.conv2.weight": (1280, 1280, 3),
                      "transformer.audio.positional_embedding": (1500, 1280),
                      "transformer.audio.blocks.31.attn.key.weight": (1280, 1280),
                      "transformer.audio.blocks.0.mlp.0.weight": (5120, 1280),
                      "transformer.audio.blocks.0.mlp.2.weight": (1280, 5120),
                      "transformer.audio.proj.weight": (4096, 1280),
                      "transformer.audio.audio_bos_eos_token.weight": (2, 4096),
                      "transformer.wte.weight": (155947, 4096), "transformer.h.31.attn.c_attn.weight": (12288, 4096),
                      "transformer.h.0.attn.c_attn.bias": (12288,), "transformer.h.0.mlp.w1.weight": (11008, 4096),
                      "transformer.h.0.mlp.c_proj.weight": (4096, 11008), "lm_head.weight": (155947, 4096)},
    "hf-qwen2-audio": {"audio_tower.conv1.weight": (1280, 128, 3), "audio_tower.embed_positions.weight": (1500, 1280),
                       "audio_tower.layers.0.self_attn.k_proj.weight": (1280, 1280),
                       "multi_modal_projector.linear.weight": (4096, 1280),
                       "language_model.model.embed_tokens.weight": (156032, 4096),
                       "language_model.model.layers.0.mlp.gate_proj.weight": (11008, 4096),
                       "language_model.lm_head.weight": (156032, 4096)},
    "openai-whisper": {"encoder.blocks.31.mlp.0.weight": (5120, 1280), "encoder.ln_post.bias": (1280,),
                       "decoder.token_embedding.weight": (51865, 1280), "decoder.positional_embedding": (448, 1280),
                       "decoder.blocks.31.cross_attn.key.weight": (1280, 1280),
                       "decoder.blocks.0.cross_attn.query.bias": (1280,), "decoder.blocks.0.mlp.0.weight": (5120, 1280),
                       "decoder.ln.bias": (1280,)},
    "hf-whisper": {"model.encoder.conv1.weight": (1280, 128, 3), "model.encoder.layer_norm.weight": (1280,),
                   "model.decoder.embed_tokens.weight": (51866, 1280),
                   "model.decoder.embed_positions.weight": (448, 1280),
                   "model.decoder.layers.31.encoder_attn.k_proj.weight": (1280, 1280),
                   "model.decoder.layers.0.fc2.weight": (1280, 5120), "model.decoder.layer_norm.weight": (1280,)},
    "hf-qwen": {"transformer.wte.weight": (151936, 4096), "transformer.h.0.attn.c_proj.weight": (4096, 4096)},
}


@pytest.mark.parametrize("flag", sorted(MAPS))
def test_maps_cover_the_real_models_with_spec_shapes(flag):
  cfg = get_config(PRESET_OF[flag])
  shapes = checkpoint_io.param_shapes(cfg)
  rules = engine.active_rules(MAPS[flag], shapes)
  targets = [t for r in rules for t in r.targets]
  assert sorted(targets) == sorted(shapes)  # every parameter exactly once
  names = {r.name(i): engine.expected_source_shape(r, shapes, cfg)
           for r in rules for i in (range(shapes[r.targets[0]][0]) if r.stacked else [None])}
  for name, shape in SPEC_SHAPES[flag].items():
    assert names[name] == shape, name
  # Tensor counts: 15 per encoder block + 7 top (+3 projector/bos-eos or +2 projector); 8 (v1) or 12 per
  # LLM block + 3 top; Whisper's text decoder: 24 per block (15 + 9 cross-attention) + 4 top.
  n_tensors = {"hf-qwen": 32 * 8 + 3, "hf-qwen-audio": 32 * 15 + 10 + 32 * 8 + 3,
               "hf-qwen2-audio": 32 * 15 + 9 + 32 * 12 + 3}
  assert len(names) == n_tensors.get(flag, 32 * 15 + 7 + 32 * 24 + 4)
  if "whisper" in flag:  # Whisper's key projections have no bias (encoder, self- and cross-attention)
    assert not any(n.endswith(("key.bias", "k_proj.bias")) for n in names)


class _FakeSource:
  """Names and shapes only (what `engine.plan` reads); zeros as data."""

  def __init__(self, shapes):
    self.path = "fake.pt"
    self.infos = {n: TensorInfo(n, s, "float32", "fake.pt") for n, s in shapes.items()}

  def read(self, name):
    return np.zeros(self.infos[name].shape, np.float32)


def test_missing_openai_positional_buffer_is_recomputed():
  cfg = hf_configs.whisper_from_dims(dict(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=4,
                                          n_audio_layer=2, n_vocab=96, n_text_ctx=32, n_text_state=64,
                                          n_text_head=4, n_text_layer=2), "dims")
  shapes = checkpoint_io.param_shapes(cfg)
  rules = engine.active_rules(MAPS["openai-whisper"], shapes)
  names = {r.name(i): engine.expected_source_shape(r, shapes, cfg)
           for r in rules for i in (range(2) if r.stacked else [None])}
  del names["encoder.positional_embedding"]
  plan = engine.plan(_FakeSource(names), MAPS["openai-whisper"], cfg, shapes, "openai-whisper")
  assert [(r.source, layer) for r, layer in plan.defaults] == [("encoder.positional_embedding", None)]
  arrays, filled = engine.allocate(shapes, np.dtype(np.float32), None), set()
  engine.fill(plan, arrays, filled)
  engine.check_filled(arrays, filled)
  np.testing.assert_array_equal(arrays["audio_encoder/embed_positions"], sinusoids(1500, 64))
  del names["encoder.ln_post.bias"]  # not optional
  with pytest.raises(ConversionError, match="missing tensor encoder.ln_post.bias"):
    engine.plan(_FakeSource(names), MAPS["openai-whisper"], cfg, shapes, "openai-whisper")


if __name__ == "__main__":
  if sys.argv[1] == "--full-disk":
    _convert_with_full_disk(*sys.argv[2:])
  _convert_while_truncating(*sys.argv[1:])
