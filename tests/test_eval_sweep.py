"""Evaluation sweeps end to end on tiny fixtures: 2 checkpoints × 3 datasets write every artefact; a
re-run skips every cell; a sweep killed (SIGKILL) mid-cell resumes to per-sample dumps identical to an
uninterrupted run; a 2-process sweep gives the same results as one process; batch size 1 and 8 give
identical hypotheses; a missing manifest or audio file is one line before any model work."""

import json
import os
import socket
import subprocess
import sys
import time

import ml_collections
import numpy as np
import pytest
import soundfile

torch = pytest.importorskip("torch")

from conversion import convert, tiny_models  # noqa: E402
from qwen_audio_jax.eval import cell, sweep, sweep_config  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASR_TAGS = "<|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>"


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
  root = tmp_path_factory.mktemp("sweep")
  ckpts = []
  for seed in (3, 4):
    tiny_models.hf_qwen_audio(str(root / f"hf{seed}"), seed=seed)
    ckpts.append(convert.convert("hf-qwen-audio", str(root / f"hf{seed}"), str(root / f"ckpt{seed}"),
                                 log=lambda *a: None))
  rng = np.random.default_rng(0)
  (root / "audio").mkdir()
  for k in range(10):
    soundfile.write(root / "audio" / f"a{k}.wav", (0.1 * rng.standard_normal(int(rng.uniform(0.5, 2.5) * 16000))
                                                    ).astype(np.float32), 16000)
  with open(root / "asr_eval.jsonl", "w") as f:
    for k in range(10):
      f.write(json.dumps({"audio": f"audio/a{k}.wav", "prompt": ASR_TAGS, "gt": f"word {k} here",
                          "source": "fixture_asr"}) + "\n")
  with open(root / "aqa.jsonl", "w") as f:
    for k in range(6):
      f.write(json.dumps({"audio": f"audio/a{k}.wav", "task": "aqa", "lang": "en", "question": "loud?",
                          "text": "yes" if k % 2 else "no"}) + "\n")
  return root, ckpts


def config(root, ckpts, batch_size=4) -> ml_collections.ConfigDict:
  c = sweep_config.base_config()
  c.checkpoints = ",".join(f"m{k}={p}" for k, p in enumerate(ckpts))
  c.data_root = str(root)
  c.paths.asr = "asr_eval.jsonl"
  c.datasets = [
      dict(name="asr", task="asr", recipe="asr_wer@qwen-audio-v1", fields={"lang": "en"},
           reference={"wer": 0.5}, source=dict(name="eval_jsonl", path_key="asr")),
      dict(name="asc", task="asc", recipe="cls_acc@qwen-audio-v1",
           source=dict(name="synthetic", split="test", tasks=["asc"], size=5)),
      dict(name="aqa", task="aqa", recipe="aqa_acc@qwen-audio-v1", source=dict(name="jsonl", path=str(root / "aqa.jsonl"))),
  ]
  c.decode.batch_size = batch_size
  c.decode.max_new_tokens = 5
  return c


def _dumps(workdir):
  out = {}
  for ckpt in ("m0", "m1"):
    for ds in ("asr", "asc", "aqa"):
      with open(os.path.join(workdir, ckpt, ds + ".jsonl")) as f:
        out[(ckpt, ds)] = [json.loads(line) for line in f]
  return out


def _summaries(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return {(c["checkpoint"], c["dataset"]): c["summary"] for c in json.load(f)["cells"]}


@pytest.fixture(scope="module")
def reference_run(fixtures, tmp_path_factory):
  root, ckpts = fixtures
  workdir = str(tmp_path_factory.mktemp("ref"))
  sweep.run(config(root, ckpts), workdir)
  return workdir


def test_sweep_writes_every_artefact_and_reruns_skip(fixtures, reference_run):
  workdir = reference_run
  for name in ("results.json", "results.md", "results.png", "manifest.json"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  summaries = _summaries(workdir)
  assert len(summaries) == 6 and summaries[("m0", "asr")]["recipe"] == "asr_wer@qwen-audio-v1"
  assert summaries[("m0", "asr")]["n"] == 10 and summaries[("m1", "aqa")]["n"] == 6
  table = open(os.path.join(workdir, "results.md")).read()
  assert "| m0 |" in table and "(paper 0.5)" in table
  manifest = json.load(open(os.path.join(workdir, "manifest.json")))
  assert len(manifest["checkpoints"][0]["content_sha256"]) == 64 and "sacrebleu" in manifest["packages"]
  row = _dumps(workdir)[("m0", "asr")][0]
  assert {"id", "prompt", "references", "hypothesis", "metrics"} <= set(row) and "hyp_norm" in row["metrics"]
  root, ckpts = fixtures
  t0 = time.time()
  sweep.run(config(root, ckpts), workdir)
  assert time.time() - t0 < 30
  assert _summaries(workdir) == summaries


def test_rerun_skips_with_a_log_line(fixtures, reference_run):
  root, ckpts = fixtures
  out = _cli(root, ckpts, reference_run)
  assert out.returncode == 0, out.stderr
  assert out.stderr.count("finished earlier") == 6


def test_batch_size_1_and_8_give_identical_hypotheses(fixtures, reference_run, tmp_path):
  root, ckpts = fixtures
  one = str(tmp_path / "b1")
  sweep.run(config(root, ckpts, batch_size=1), one)
  strip = lambda rows: [(r["id"], r["hypothesis"], r["ids"]) for r in rows]
  assert {k: strip(v) for k, v in _dumps(one).items()} == {k: strip(v) for k, v in _dumps(reference_run).items()}


KILL_AFTER = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from qwen_audio_jax.eval import cell, sweep
sys.path.insert(0, {tests!r})
import test_eval_sweep as t
calls = [0]
real = cell.decode_rows
def dying(*a, **k):
  calls[0] += 1
  if calls[0] == {n}:
    os.kill(os.getpid(), signal.SIGKILL)
  return real(*a, **k)
cell.decode_rows = dying
import pathlib
sweep.run(t.config(pathlib.Path({root!r}), {ckpts!r}), {workdir!r})
"""


def test_killed_sweep_resumes_to_identical_dumps(fixtures, reference_run, tmp_path):
  root, ckpts = fixtures
  workdir = str(tmp_path / "killed")
  script = KILL_AFTER.format(repo=REPO, tests=os.path.join(REPO, "tests"), n=3, root=str(root), ckpts=ckpts,
                             workdir=workdir)
  killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
  assert killed.returncode == -9, killed.stderr[-2000:]
  part = [f for f in os.listdir(os.path.join(workdir, "m0")) if ".part-" in f]
  assert part and sum(1 for _ in open(os.path.join(workdir, "m0", part[0]))) == 8  # 2 batches of 4 flushed
  decoded = []
  real = cell.decode_rows

  def counting(pipe, records, indices, settings):
    decoded.append(len(indices))
    return real(pipe, records, indices, settings)

  cell.decode_rows = counting
  try:
    sweep.run(config(root, ckpts), workdir)
  finally:
    cell.decode_rows = real
  assert decoded[0] == 2 and sum(decoded) == 2 + 10 + 2 * (5 + 6)  # the 8 flushed samples were not redone
  assert _dumps(workdir) == _dumps(reference_run)


def _cli(root, ckpts, workdir, env=None, batch=4):
  cfg_file = os.path.join(root, "sweep_config.py")
  with open(cfg_file, "w") as f:
    f.write("import pathlib, sys\nsys.path.insert(0, %r)\nimport test_eval_sweep as t\n"
            "def get_config(arg=None):\n  return t.config(pathlib.Path(%r), %r, %d)\n"
            % (os.path.join(REPO, "tests"), str(root), ckpts, batch))
  return subprocess.Popen([sys.executable, "-m", "qwen_audio_jax.evaluate", f"--config={cfg_file}",
                           f"--workdir={workdir}"], cwd=REPO, env={**os.environ, **(env or {})},
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) if env else subprocess.run(
      [sys.executable, "-m", "qwen_audio_jax.evaluate", f"--config={cfg_file}", f"--workdir={workdir}"],
      cwd=REPO, capture_output=True, text=True, timeout=600)


def test_two_process_sweep_equals_one_process(fixtures, reference_run, tmp_path):
  root, ckpts = fixtures
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  workdir = str(tmp_path / "two")
  procs = [_cli(root, ckpts, workdir, env={"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
                                          "JAX_PROCESS_ID": str(i), "JAX_PLATFORMS": "cpu"}) for i in range(2)]
  outs = [p.communicate(timeout=900) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
  assert _summaries(workdir) == _summaries(reference_run)
  assert _dumps(workdir) == _dumps(reference_run)


def test_missing_manifest_or_audio_is_one_line_before_model_work(fixtures, tmp_path):
  root, ckpts = fixtures
  c = config(root, ckpts)
  c.paths.asr = "nope.jsonl"
  with pytest.raises(Exception, match="nope.jsonl: manifest file not found"):
    sweep.run(c, str(tmp_path / "a"))
  broken = tmp_path / "broken.jsonl"
  broken.write_text(json.dumps({"audio": "audio/missing.wav", "prompt": ASR_TAGS, "gt": "x"}) + "\n")
  c = config(root, ckpts)
  c.paths.asr = str(broken)
  with pytest.raises(FileNotFoundError, match="missing.wav"):
    sweep.run(c, str(tmp_path / "b"))
  assert not os.path.exists(tmp_path / "b" / "m0")
  with pytest.raises(sweep_config.SweepConfigError, match="no checkpoints"):
    sweep_config.checkpoint_list(sweep_config.base_config())


KILL_AT_RANDOM = """
import os, signal, sys, threading, time
sys.path.insert(0, {repo!r})
from qwen_audio_jax.eval import cell, sweep
sys.path.insert(0, {tests!r})
import test_eval_sweep as t
import pathlib
cfg = t.config(pathlib.Path({root!r}), {ckpts!r})
threading.Timer({delay!r}, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
sweep.run(cfg, {workdir!r})
time.sleep(60)  # finished before the moment: the timer still kills (the rerun then only skips)
"""


@pytest.mark.slow
def test_sweep_killed_at_random_moments_resumes_to_identical_results(fixtures, reference_run, tmp_path):
  """kill -9 at 6 seeded random moments (from start-up to the end of a sweep), each resumed: identical dumps
  and summaries. `pytest -m slow tests/test_eval_sweep.py`."""
  import random
  root, ckpts = fixtures
  t0 = time.time()
  timing = KILL_AT_RANDOM.replace("threading.Timer", "0 and threading.Timer").replace("time.sleep(60)", "pass")
  subprocess.run([sys.executable, "-c", timing.format(repo=REPO, tests=os.path.join(REPO, "tests"), root=str(root),
                                                      ckpts=ckpts, workdir=str(tmp_path / "timing"), delay=0.0)],
                 capture_output=True, text=True, timeout=900, check=True)
  span = time.time() - t0
  rng = random.Random(20261201)
  for trial in range(6):
    workdir = str(tmp_path / f"trial{trial}")
    delay = rng.uniform(0.3 * span, 1.0 * span)
    script = KILL_AT_RANDOM.format(repo=REPO, tests=os.path.join(REPO, "tests"), root=str(root), ckpts=ckpts,
                                   workdir=workdir, delay=delay)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900)
    assert killed.returncode == -9, killed.stderr[-2000:]
    parts = sum(".part-" in f for d in ("m0", "m1") if os.path.isdir(os.path.join(workdir, d))
                for f in os.listdir(os.path.join(workdir, d)))
    sweep.run(config(root, ckpts), workdir)
    print("EVAL_TRIAL", trial, f"kill at {delay:.1f}s of {span:.1f}s", f"part files at kill {parts}")
    assert _dumps(workdir) == _dumps(reference_run)
    assert _summaries(workdir) == _summaries(reference_run)
