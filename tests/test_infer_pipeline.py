"""The inference pipeline and CLI on a tiny random Qwen-Audio with the real tokenizer:
every task prompt is batch invariant (fp32 and bf16), compiled executables are reused across 50 random
requests inside the buckets, chunked long audio is decoded window by window and stitched, and bad
input gets one line and exit 2."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile

torch = pytest.importorskip("torch")

from conversion import convert, tiny_models  # noqa: E402
from qwen_audio_jax.infer import Pipeline  # noqa: E402
from qwen_audio_jax.infer import __main__ as infer_cli  # noqa: E402
from qwen_audio_jax.infer.results import _join_text, _join_words  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = [("asr", {}), ("s2tt", {"target_language": "de"}), ("srwt", {}), ("aac", {}), ("asc", {}), ("ser", {}),
         ("aqa", {"question": "what is it?"}), ("vsc", {}), ("mna", {})]


def _wav(path, seconds, seed=0, rate=16000):
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * rate)) / rate
  wave = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.05 * rng.standard_normal(t.size)
  soundfile.write(path, wave.astype(np.float32), rate)
  return str(path)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  root = tmp_path_factory.mktemp("qa")
  tiny_models.hf_qwen_audio(str(root / "hf"))
  return convert.convert("hf-qwen-audio", str(root / "hf"), str(root / "ckpt"), log=lambda *a: None)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
  root = tmp_path_factory.mktemp("clips")
  return [_wav(root / f"c{k}.wav", s, k) for k, s in enumerate((0.6, 1.9, 1.2, 3.1, 0.9, 2.4, 1.6, 2.9))]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_every_task_prompt_is_batch_invariant(ckpt, clips, dtype):
  pipe = Pipeline.from_checkpoint(ckpt, dtype=dtype, max_batch=8)
  for task, fields in TASKS:
    batched = pipe.generate(clips, task=task, max_new_tokens=12, **fields)
    single = [pipe.generate([c], task=task, max_new_tokens=12, **fields)[0] for c in clips]
    assert [r.ids for r in batched] == [r.ids for r in single], task
    assert all(r.ids for r in batched)


def test_no_recompilation_after_warmup(ckpt, tmp_path):
  pipe = Pipeline.from_checkpoint(ckpt, max_batch=8)
  rng = np.random.default_rng(0)
  pool = [_wav(tmp_path / f"r{k}.wav", float(s), k) for k, s in enumerate(rng.uniform(1.3, 3.9, size=24))]
  short, long = _wav(tmp_path / "short.wav", 1.3, 0), _wav(tmp_path / "long.wav", 3.9, 1)
  for size in (2, 4, 8):  # warm-up: batch buckets (1 row decodes as 2) × prompt buckets 64 and 128
    for clip in (short, long):
      pipe.generate([clip] * size, task="asr", max_new_tokens=6)
  warm = pipe.compiles
  for _ in range(50):
    chosen = list(rng.choice(pool, size=int(rng.integers(1, 9)), replace=False))
    pipe.generate(chosen, task="asr", max_new_tokens=int(rng.integers(1, 7)))
  assert warm == 6 and pipe.compiles == warm


def test_chat_and_raw_prompts(ckpt, clips):
  pipe = Pipeline.from_checkpoint(ckpt)
  messages = [{"role": "user", "content": [{"audio": clips[0]}, {"audio": clips[1]}, {"text": "Compare them."}]},
              {"role": "assistant", "content": "They differ."},
              {"role": "user", "content": [{"audio": clips[2]}, {"text": "And this one?"}]}]
  reply = pipe.chat(messages, max_new_tokens=8)
  assert reply.prompt.count("Audio 1:<audio>") == 2 and "Audio 2:<audio>" in reply.prompt
  assert "<|im_start|>" not in reply.text
  tags = "<|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>"
  raw = pipe.generate([], prompt=f"<audio>{clips[0]}</audio>{tags}", max_new_tokens=8)[0]
  task = pipe.generate([clips[0]], task="asr", max_new_tokens=8)[0]
  assert raw.ids == task.ids  # the raw eval-script prompt is the asr task prompt


def test_chunked_long_audio_through_the_cli(ckpt, tmp_path, jfk_path):
  speech, rate = soundfile.read(jfk_path)
  speech = speech.mean(axis=1) if speech.ndim == 2 else speech
  long = np.tile(speech, int(np.ceil(95 * rate / len(speech))))[:95 * rate]
  path = tmp_path / "talk 95s.wav"
  soundfile.write(path, long, rate)
  out = subprocess.run([sys.executable, "-m", "qwen_audio_jax.infer", f"--checkpoint={ckpt}", f"--audio={path}",
                        "--task=asr", "--long_audio=chunk", "--chunk_overlap_s=2", "--max_new_tokens=6", "--json"],
                       capture_output=True, text=True, cwd=REPO, timeout=600)
  assert out.returncode == 0, out.stderr
  result = json.loads(out.stdout)
  offsets = [w["offset_s"] for w in result["windows"]]
  assert offsets == [0.0, 28.0, 56.0, 84.0] and all(w["text"] for w in result["windows"])
  assert result["duration_s"] == pytest.approx(95.0) and not result["truncated"]


def test_stitching_offsets_and_deduplicates_overlap():
  words = [[{"word": "a", "start": 0.5, "end": 1.0}, {"word": "b", "start": 28.6, "end": 29.5}],
           [{"word": "b", "start": 0.6, "end": 1.5}, {"word": "c", "start": 3.0, "end": 3.5}]]
  joined = _join_words(words, offsets=[0.0, 28.0], ends=[30.0, 40.0])
  assert joined == [{"word": "a", "start": 0.5, "end": 1.0}, {"word": "b", "start": 28.6, "end": 29.5},
                    {"word": "c", "start": 31.0, "end": 31.5}]
  assert [w["start"] for w in joined] == sorted(w["start"] for w in joined)
  assert _join_text(["the cat sat on", "sat on the mat"], overlapping=True) == "the cat sat on the mat"
  assert _join_text(["the cat sat on", "sat on the mat"], overlapping=False) == "the cat sat on sat on the mat"


@pytest.fixture(scope="module")
def other_family(tmp_path_factory):
  root = tmp_path_factory.mktemp("whisper")
  tiny_models.hf_qwen(str(root / "qwen"))
  return convert.convert("hf-qwen", str(root / "qwen"), str(root / "ckpt"), log=lambda *a: None)


def test_bad_input_is_one_line_exit_2(ckpt, clips, tmp_path, other_family, capsys):
  garbage = tmp_path / "noise.wav"
  garbage.write_bytes(os.urandom(2000))
  long = _wav(tmp_path / "long.wav", 31.0)
  cases = {
      "missing": ([f"--audio={tmp_path / 'nope.wav'}", "--task=asr"], "no such file"),
      "garbage": ([f"--audio={garbage}", "--task=asr"], "cannot decode audio"),
      "31 s": ([f"--audio={long}", "--task=asr"], "over the 30 s limit"),
      "empty prompt": ([f"--audio={clips[0]}", "--prompt="], "prompt is empty"),
      "unknown task": ([f"--audio={clips[0]}", "--task=dance"], "invalid choice"),
      "no mode": ([f"--audio={clips[0]}"], "exactly one of --task, --prompt or --chat"),
      "s2tt without target": ([f"--audio={clips[0]}", "--task=s2tt"], "needs --target_language"),
      "bad beams": ([f"--audio={clips[0]}", "--task=asr", "--num_beams=0"], "num_beams"),
  }
  for name, (argv, message) in cases.items():
    code = _exit_code(lambda: infer_cli.main([f"--checkpoint={ckpt}", *argv]))
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, (name, err)
  code = _exit_code(lambda: infer_cli.main([f"--checkpoint={other_family}", f"--audio={clips[0]}", "--task=asr"]))
  err = capsys.readouterr().err.strip()
  assert code == 2 and "cannot generate" in err and len(err.splitlines()) == 1, err


def _exit_code(fn) -> int:
  try:
    return fn()
  except SystemExit as e:
    return int(e.code)


SHARDED = """
import json, sys
import jax, numpy as np
from qwen_audio_jax.infer import Pipeline
from qwen_audio_jax.infer import requests as R
from qwen_audio_jax.sharding import partition
out = {}
for mesh in [(1, -1, 1), (2, 4, 1), (2, 2, 2), (1, 1, 1)]:
  pipe = Pipeline.from_checkpoint(sys.argv[1], mesh_shape=mesh, max_batch=8)
  gen = pipe.generator
  assert len(gen.mesh.devices.flat) == (1 if mesh == (1, 1, 1) else 8)
  out[str(mesh)] = [r.ids for r in pipe.generate(sys.argv[2:], task="asr", max_new_tokens=10)]
  out[str(mesh) + " beam"] = [r.ids for r in pipe.generate(sys.argv[2:4], task="asr", max_new_tokens=6, num_beams=2)]
  rows = [R.task_rows(pipe.encoder, c, k, "asr", R.task_fields_for("asr"), "error")[0] for k, c in enumerate(sys.argv[2:])]
  batch, seq = gen._collate([r.prompt for r in rows], pipe.settings("base", "asr"))
  with partition.activation_context(gen.mesh):
    logits, _ = jax.jit(lambda p, b: gen.fns.prefill(p, b, seq + 32))(gen.params, gen._place(batch))
  out[str(mesh) + " logits"] = np.asarray(logits).tolist()
print(json.dumps(out))
"""


def test_sharded_generation_on_8_devices_equals_one_device(ckpt, clips):
  """Sharded over 8 devices (fsdp, data x fsdp) the ids equal one device's; every mesh, tensor parallelism
  included, gives the one-device logits up to float32 rounding (split sums, per-device batch shapes), so
  tensor-parallel ids may differ at near-ties of this random model and are not compared."""
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", SHARDED, ckpt, *clips], capture_output=True, text=True, cwd=REPO,
                       env=env, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  res = json.loads(out.stdout.strip().splitlines()[-1])
  for kind in ("", " beam"):
    assert res["(1, -1, 1)" + kind] == res["(2, 4, 1)" + kind] == res["(1, 1, 1)" + kind], kind
  one = np.asarray(res["(1, 1, 1) logits"])
  for mesh in ("(1, -1, 1)", "(2, 4, 1)", "(2, 2, 2)"):
    rel = np.abs(np.asarray(res[mesh + " logits"]) - one).max() / np.abs(one).max()
    assert rel < 2e-6, (mesh, rel)  # measured <= 3.3e-7
