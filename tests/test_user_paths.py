"""From a user's data to a usable model, through the real CLIs.

Every shipped 7B config, made tiny from the command line, trains 2 steps on a manifest of wav clips and
evaluates on a separate eval manifest; its outputs feed `embed` and `export` (bit-exact round trip);
resuming with a changed model is refused without touching the workdir; a truncated latest checkpoint is
set aside and training continues from the previous one; Ctrl-C saves and exits 0, twice exits at once.
One subprocess per config (tiny presets, 2 steps); the rest reuses their workdirs.
"""

import dataclasses
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from qwen_audio_jax import checkpoint_io, embed
from qwen_audio_jax.data import ExampleEncoder, collate_train, read_eval_jsonl, read_task_jsonl
from qwen_audio_jax.train import loop, model_fns, testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from conversion import convert, export  # noqa: E402

CONFIGS = {  # name: (config, tiny preset)
    "pretrain": ("configs/qwen_audio_7b_pretrain.py", "tiny-qwen-audio"),
    "sft": ("configs/qwen_audio_7b_sft.py", "tiny-qwen-audio"),
    "qwen2_sft": ("configs/qwen2_audio_7b_sft.py", "tiny-qwen2-audio"),
    "lora": ("configs/qwen_audio_7b_lora.py", "tiny-qwen-audio"),
    "lora_qwen2": ("configs/qwen_audio_7b_lora.py:qwen2", "tiny-qwen2-audio"),
}
MEL_FRAMES, BUCKET = 400, 256


def _env():
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_backend_optimization_level=0", PYTHONUNBUFFERED="1")


def tiny_flags(preset: str, data: dict, steps: int = 2) -> list[str]:
  """What makes a shipped 7B config tiny, plus the user's data from the command line."""
  return [f"--config.model.preset={preset}", "--config.model.dtype=float32", "--config.model.remat_policy=none",
          f"--config.train.total_steps={steps}", "--config.train.batch_size=2",
          f"--config.train.mel_frames={MEL_FRAMES}",
          "--config.train.allow_random_init=true", f"--config.data.train_manifest={data['train']}",
          f"--config.data.eval_manifest={data['dev']}", f"--config.data.seq_buckets=({BUCKET},)",
          "--config.data.num_workers=0", "--config.eval.every_steps=2", "--config.eval.batches=1",
          "--config.eval.batch_size=2", "--config.checkpoint.every_steps=1", "--config.log.every_steps=1",
          "--config.log.plot=false", "--config.log.tensorboard=false", "--config.optim.warmup_steps=1",
          "--config.log.peak_tflops=1.0"]


def train_cli(config: str, workdir: str, flags: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
  cmd = [sys.executable, "-m", "qwen_audio_jax.train", f"--config={config}", f"--workdir={workdir}", *flags]
  return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return testing.write_user_manifests(str(tmp_path_factory.mktemp("user_data")))


class _Runs(dict):
  """name -> (workdir, finished process); each config is trained once, when a test first asks for it."""

  def __init__(self, root, data):
    super().__init__()
    self.root, self.data = root, data

  def __missing__(self, name):
    config, preset = CONFIGS[name]
    workdir = str(self.root / name)
    self[name] = (workdir, train_cli(config, workdir, tiny_flags(preset, self.data)))
    return self[name]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data):
  return _Runs(tmp_path_factory.mktemp("runs"), data)


def _metrics(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_shipped_config_trains_on_user_manifests(runs, name):
  workdir, proc = runs[name]
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  rows = _metrics(workdir)
  losses = {r["step"]: r["loss"] for r in rows if "loss" in r}
  evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
  assert sorted(losses) == [1, 2]
  assert all(math.isfinite(v) and v > 1.0 for v in losses.values()), losses  # ~ln(vocab) at init, never 0
  assert len(evals) == 1 and math.isfinite(evals[0]) and evals[0] > 1.0
  assert checkpoint_io.run_steps(workdir, "checkpoints") == [1, 2]
  assert checkpoint_io.run_steps(workdir, "best") == [2]
  if name.startswith("lora"):
    assert os.path.exists(os.path.join(workdir, "lora_adapter", "adapter_model.safetensors"))


def _loss_fn(workdir: str, family: str, n_mels: int):
  """record -> its loss under the run's best params, computed here from the pipeline's pieces."""
  cfg, params, _ = checkpoint_io.load_model_checkpoint(workdir)  # a WORKDIR resolves to its best step
  encoder = ExampleEncoder(family=family, max_tokens=BUCKET)
  fns = model_fns.build(cfg)
  loss_of = jax.jit(lambda p, b: fns.loss(p, b, train=False)[0])

  def loss(record: dict) -> float:
    host = collate_train([encoder.encode(record)], buckets=(BUCKET,), max_audios=1, n_mels=n_mels,
                         pad_id=encoder.tokenizer.pad_id)
    return float(loss_of(params, loop.device_batch(host, MEL_FRAMES)))
  return loss


def test_eval_loss_comes_from_the_eval_manifest(runs, data):
  """The held-out loss logged at step 2 is the loss of the eval manifest's record (its only one), and
  not that of any training record: with separate manifests, evaluation reads the eval one."""
  workdir, proc = runs["sft"]
  assert proc.returncode == 0, proc.stderr[-3000:]
  logged = [r["eval_loss"] for r in _metrics(workdir) if "eval_loss" in r][0]
  loss = _loss_fn(workdir, "qwen-audio", 80)
  assert logged == pytest.approx(loss(read_eval_jsonl(data["dev"])[0]), rel=2e-6)
  train_losses = [loss(r) for r in read_task_jsonl(data["train"])[:3]]
  assert all(abs(t - logged) > 1e-3 for t in train_losses), (logged, train_losses)


def _unpadded(params: dict, vocab_size: int) -> dict:
  """The 7B configs pad the vocabulary rows (decoder.vocab_pad_to); exports hold only the true rows."""
  flat = dict(checkpoint_io.flatten(params))
  flat["decoder/embed/embedding"] = flat["decoder/embed/embedding"][:vocab_size]
  flat["decoder/lm_head/kernel"] = flat["decoder/lm_head/kernel"][:, :vocab_size]
  return checkpoint_io.unflatten(flat)


def _tree_equal(a: dict, b: dict) -> None:
  fa, fb = checkpoint_io.flatten(a), checkpoint_io.flatten(b)
  assert set(fa) == set(fb)
  for path in fa:
    np.testing.assert_array_equal(np.asarray(fa[path]), np.asarray(fb[path]), err_msg=path)


def _modes(root: str) -> set[tuple[str, int]]:
  out = {("dir", os.stat(root).st_mode & 0o777)}
  for base, dirs, files in os.walk(root):
    out |= {("dir", os.stat(os.path.join(base, d)).st_mode & 0o777) for d in dirs}
    out |= {("file", os.stat(os.path.join(base, f)).st_mode & 0o777) for f in files}
  return out


def test_embed_and_export_take_a_run_and_round_trip_bit_exactly(runs, data, tmp_path, capsys):
  workdir, proc = runs["sft"]
  assert proc.returncode == 0, proc.stderr[-3000:]
  for i, target in enumerate([os.path.join(workdir, "best", "2"), os.path.join(workdir, "checkpoints", "1"),
                              workdir, workdir + "@latest"]):
    out = str(tmp_path / f"emb{i}")
    assert embed.main([f"--checkpoint={target}", f"--audio={data['clip']}", f"--output={out}"]) == 0
    assert f"wrote {out}.npy" in capsys.readouterr().out  # the path actually written
    assert np.load(out + ".npy").shape[1] == 64
  previous = os.umask(0o022)
  try:
    exported = str(tmp_path / "hf")
    assert export.main([f"--checkpoint={workdir}", "--step=latest", "--target=hf-qwen-audio",
                        f"--output={exported}"]) == 0
    assert _modes(exported) == {("dir", 0o755), ("file", 0o644)}
    back = str(tmp_path / "back")
    assert convert.main(["--source=hf-qwen-audio", f"--input={exported}", f"--output={back}"]) == 0
    assert _modes(back) == {("dir", 0o755), ("file", 0o644)}
  finally:
    os.umask(previous)
  run_cfg, run_params, meta = checkpoint_io.load_model_checkpoint(workdir, step="latest")
  assert meta["run"]["step"] == 2 and meta["run"]["kind"] == "checkpoints"
  assert run_cfg.decoder.padded_vocab > run_cfg.decoder.vocab_size  # the run pads; the export does not
  _tree_equal(checkpoint_io.load_model_checkpoint(back)[1], _unpadded(run_params, run_cfg.decoder.vocab_size))


def test_lora_run_exports_its_merged_model(runs, tmp_path):
  from qwen_audio_jax import export_run  # pylint: disable=import-outside-toplevel
  workdir, proc = runs["lora"]
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert export_run.main([f"--workdir={workdir}", f"--output={tmp_path / 'hf'}"]) == 0  # best step, family target
  assert convert.main(["--source=hf-qwen-audio", f"--input={tmp_path / 'hf'}", f"--output={tmp_path / 'back'}"]) == 0
  ckpt = checkpoint_io.resolve(workdir)
  merged = ckpt.load()
  _tree_equal(checkpoint_io.load_model_checkpoint(str(tmp_path / "back"))[1],
              _unpadded(merged, ckpt.config.decoder.vocab_size))
  base = dataclasses.replace(ckpt, metadata={**ckpt.metadata, "lora": None}).load()  # scale 0: W + 0 = W
  q = "decoder/layers/attn/q/kernel"
  assert not np.array_equal(checkpoint_io.flatten(merged)[q], checkpoint_io.flatten(base)[q])  # adapters trained
  assert np.array_equal(checkpoint_io.flatten(merged)["decoder/embed/embedding"],
                        checkpoint_io.flatten(base)["decoder/embed/embedding"])


def _snapshot(root: str) -> dict[str, tuple]:
  out = {}
  for base, dirs, files in os.walk(root):
    for name in dirs + files:
      path = os.path.join(base, name)
      st = os.stat(path)
      digest = hashlib.sha256(open(path, "rb").read()).hexdigest() if os.path.isfile(path) else None
      out[os.path.relpath(path, root)] = (st.st_mode, digest)
  return out


def test_resume_with_another_model_is_refused_and_changes_nothing(runs, data):
  workdir, proc = runs["sft"]
  assert proc.returncode == 0, proc.stderr[-3000:]
  before = _snapshot(workdir)
  t0 = time.time()
  changed = tiny_flags("tiny-qwen-audio", data) + ["--config.model.decoder.n_layers=3"]
  again = train_cli(CONFIGS["sft"][0], workdir, changed)
  assert time.time() - t0 < 60
  assert again.returncode == 2, again.stderr[-2000:]
  lines = again.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error:"), again.stderr
  assert "model.decoder.n_layers: 2 -> 3" in lines[0] and "fork_from" in lines[0]
  assert "compiled" not in again.stdout
  assert _snapshot(workdir) == before


def test_truncated_checkpoint_falls_back_and_ctrl_c_saves(runs, data, tmp_path):
  """A damaged latest checkpoint is set aside and training resumes from the previous one; then Ctrl-C
  stops at a step boundary with a checkpoint (exit 0), and a double Ctrl-C exits at once (130)."""
  source, proc = runs["sft"]
  assert proc.returncode == 0, proc.stderr[-3000:]
  workdir = str(tmp_path / "run")
  shutil.copytree(source, workdir)
  state = os.path.join(workdir, "checkpoints", "2", "state")
  biggest = max((os.path.join(b, f) for b, _, fs in os.walk(state) for f in fs), key=os.path.getsize)
  with open(biggest, "r+b") as f:
    f.truncate(os.path.getsize(biggest) // 2)
  flags = tiny_flags("tiny-qwen-audio", data, steps=6) + ["--config.eval.every_steps=0"]
  cmd = [sys.executable, "-m", "qwen_audio_jax.train", f"--config={CONFIGS['sft'][0]}", f"--workdir={workdir}", *flags]
  child = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  errs, out = [], []
  reader = threading.Thread(target=lambda: errs.append(child.stderr.read()), daemon=True)
  reader.start()
  for line in child.stdout:
    out.append(line)
    if line.startswith("step 2/"):
      child.send_signal(signal.SIGINT)
  assert child.wait(timeout=600) == 0, "".join(errs)[-3000:]
  reader.join()
  err = errs[0]
  text = "".join(out)
  assert "cannot be read back" in err and "resumed from step 1" in text, (err[-2000:], text)
  assert len(os.listdir(os.path.join(workdir, "damaged"))) == 1
  stopped = int(text.split("stopping at step ")[1].split()[0])
  assert 2 <= stopped < 6 and "stopped cleanly" in text
  assert checkpoint_io.run_steps(workdir, "checkpoints")[-1] == stopped
  losses = [r["step"] for r in _metrics(workdir) if "loss" in r]
  assert losses[-stopped + 1:] == list(range(2, stopped + 1))  # step 2 re-trained from step 1's state

  child = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  for line in child.stdout:
    if line.startswith("resumed from step"):
      child.send_signal(signal.SIGINT)
      time.sleep(0.2)
      child.send_signal(signal.SIGINT)
      break
  _, err = child.communicate(timeout=600)
  assert child.returncode == 130, err[-3000:]
  assert err.strip().splitlines()[-1].startswith("error: interrupted twice")
  assert checkpoint_io.run_steps(workdir, "checkpoints")[-1] == stopped  # nothing new saved
