"""The bad-input corpus through `infer`, `embed` and `evaluate` on a tiny random Qwen-Audio checkpoint (CLI
entry points called in-process; their own error handling, not pytest's, decides the exit status).

infer / embed: each bad case exits 2 within 30 s with one line naming the file and the cause; the usable
cases work (one batched infer call; embed on two of them). evaluate: bad samples are skipped and counted
(n_bad) with max_bad_fraction=1, and the sweep stops with one line naming the first bad file when they are
over the fraction; a missing audio file stops it before any model work.
"""

import json
import os
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bad_audio_corpus  # noqa: E402
from test_bad_inputs import EXPECTED, LIMIT_S, _error_of, corpus  # noqa: E402,F401  (corpus: the fixture)

from conversion import convert, tiny_models  # noqa: E402
from qwen_audio_jax import embed as embed_cli  # noqa: E402
from qwen_audio_jax.infer import __main__ as infer_cli  # noqa: E402

ASR_TAGS = "<|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  root = tmp_path_factory.mktemp("qa")
  tiny_models.hf_qwen_audio(str(root / "hf"))
  return convert.convert("hf-qwen-audio", str(root / "hf"), str(root / "ckpt"), log=lambda *a: None)


def _call(fn):
  try:
    return fn()
  except SystemExit as e:
    return int(e.code)


def _usable(corpus, case):
  return not (case == "unreadable file" and bad_audio_corpus.unreadable_is_readable(corpus[case]))


def _error_cases(corpus):
  return [c for c in sorted(corpus) if _error_of(c) is not None and _usable(corpus, c)]


def _check_error(name, corpus, case, code, err, seconds):
  lines = err.strip().splitlines()
  assert code == 2, (name, case, err[-2000:])
  assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, (name, case, err[-2000:])
  assert corpus[case] in lines[0] and _error_of(case) in lines[0], (name, case, lines[0])
  assert seconds < LIMIT_S, (name, case, seconds)


def test_infer_bad_cases_fail_with_one_line(ckpt, corpus, capsys):
  times = {}
  for case in _error_cases(corpus):
    t0 = time.time()
    code = _call(lambda: infer_cli.main([f"--checkpoint={ckpt}", f"--audio={corpus[case]}", "--task=asr",
                                         "--max_new_tokens=2"]))
    times[case] = time.time() - t0
    _check_error("infer", corpus, case, code, capsys.readouterr().err, times[case])
  print("INFER_ERROR_SECONDS", json.dumps({k: round(v, 2) for k, v in times.items()}))


def test_infer_usable_cases_work(ckpt, corpus, capsys):
  usable = [c for c in sorted(corpus) if _error_of(c) is None and _usable(corpus, c)]
  argv = [f"--audio={corpus[c]}" for c in usable]
  code = _call(lambda: infer_cli.main([f"--checkpoint={ckpt}", *argv, "--task=asr", "--max_new_tokens=2",
                                       "--json"]))
  out = capsys.readouterr()
  assert code == 0, out.err[-2000:]
  rows = [json.loads(line) for line in out.out.strip().splitlines()]
  assert [r["input"] for r in rows] == [corpus[c] for c in usable]
  for case, row in zip(usable, rows):
    assert abs(row["duration_s"] - (0.1 if case == "0.1 s" else 1.0)) < 0.01 and not row["truncated"], (case, row)


def test_embed_bad_cases_fail_with_one_line_and_write_nothing(ckpt, corpus, capsys, tmp_path):
  for case in _error_cases(corpus):
    out = tmp_path / f"{len(os.listdir(tmp_path))}.npy"
    t0 = time.time()
    code = _call(lambda: embed_cli.main([f"--checkpoint={ckpt}", f"--audio={corpus[case]}", f"--output={out}"]))
    _check_error("embed", corpus, case, code, capsys.readouterr().err, time.time() - t0)
    assert not out.exists() and not out.with_suffix(".json").exists()
  for case in ("spaces + non-ASCII path", "48 kHz stereo"):
    out = tmp_path / f"ok{len(os.listdir(tmp_path))}.npy"
    code = _call(lambda: embed_cli.main([f"--checkpoint={ckpt}", f"--audio={corpus[case]}", f"--output={out}"]))
    assert code == 0, capsys.readouterr().err[-2000:]
    assert np.all(np.isfinite(np.load(out)))


def _sweep_config(ckpt, manifest, max_bad):
  from qwen_audio_jax.eval import sweep_config
  c = sweep_config.base_config()
  c.checkpoints = f"m0={ckpt}"
  c.data_root = os.path.dirname(manifest)
  c.paths.asr = os.path.basename(manifest)
  c.datasets = [dict(name="asr", task="asr", recipe="asr_wer@qwen-audio-v1", fields={"lang": "en"},
                     source=dict(name="eval_jsonl", path_key="asr"))]
  c.decode.batch_size = 4
  c.decode.max_new_tokens = 2
  c.max_bad_fraction = max_bad
  c.chart = False
  return c


@pytest.fixture(scope="module")
def eval_manifest(corpus):
  path = os.path.join(os.path.dirname(corpus["ok 16 kHz wav"]), "eval.jsonl")
  with open(path, "w", encoding="utf-8") as f:
    for case in sorted(corpus):
      if case != "missing file" and _usable(corpus, case):
        f.write(json.dumps({"audio": corpus[case], "prompt": ASR_TAGS, "gt": "a tone", "source": case},
                           ensure_ascii=False) + "\n")
  return path


def test_evaluate_skips_and_counts_then_stops_over_the_fraction(ckpt, corpus, eval_manifest, tmp_path):
  from qwen_audio_jax.eval import cell, sweep
  results = sweep.run(_sweep_config(ckpt, eval_manifest, 1.0), str(tmp_path / "all"))
  (summary,) = [c["summary"] if "summary" in c else c for c in results["cells"]]
  bad = [c for c in _error_cases(corpus) if c != "missing file"]
  n_rows = sum(1 for _ in open(eval_manifest))
  assert summary["n_bad"] == len(bad) and summary["n_total"] == n_rows, summary
  t0 = time.time()
  with pytest.raises(cell.TooManyBadSamples) as e:
    sweep.run(_sweep_config(ckpt, eval_manifest, 0.0), str(tmp_path / "strict"))
  message = str(e.value)
  assert f"{len(bad)}/{n_rows} samples unusable" in message and "\n" not in message
  assert any(corpus[c] in message for c in bad), message
  print("EVAL_STRICT_SECONDS", round(time.time() - t0, 1))


def test_evaluate_missing_audio_stops_before_model_work(ckpt, corpus, tmp_path):
  from qwen_audio_jax.eval import sweep
  manifest = tmp_path / "eval.jsonl"
  manifest.write_text(json.dumps({"audio": corpus["missing file"], "prompt": ASR_TAGS, "gt": "x"}) + "\n")
  t0 = time.time()
  with pytest.raises(FileNotFoundError, match="missing.wav.*not found"):
    sweep.run(_sweep_config(ckpt, str(manifest), 1.0), str(tmp_path / "w"))
  assert time.time() - t0 < LIMIT_S
