"""The bad-input corpus (tests/bad_audio_corpus.py) through every entry point: the audio loader, the training
data path (per example: skipped and counted; over data.max_bad_fraction: a clear stop), `infer`, `embed` and
`evaluate` (skipped and counted; over eval max_bad_fraction: a clear stop). Each case either works with the
documented handling (`EXPECTED`) or fails within 30 s with one line naming the file and the cause, exit 2,
no traceback. Bad manifests (invalid JSON, missing fields, wrong types) likewise.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bad_audio_corpus  # noqa: E402

from qwen_audio_jax.audio.load import AudioError, load_audio  # noqa: E402
from qwen_audio_jax.data.examples import DATA_ERRORS, ExampleEncoder  # noqa: E402
from qwen_audio_jax.data.manifests import ManifestError, read_manifest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT_S = 30.0
OK = "ok"
# case: (loader result, cause in the one-line error of infer/embed/training with the default long_audio="error")
EXPECTED = {
    "empty file": ("empty file (0 bytes)", None),
    "zero-sample wav": ("audio has zero samples", None),
    "ok 16 kHz wav": (OK, None),
    "truncated wav header": ("cannot decode audio", None),
    "random bytes .wav": ("cannot decode audio (Format not recognised.)", None),
    "text file .flac": ("cannot decode audio (Format not recognised.)", None),
    "mp3": (OK, None),
    "ogg vorbis": (OK, None),
    "flac": (OK, None),
    "8 kHz": (OK, None),  # resampled to 16 kHz (soxr_hq)
    "48 kHz stereo": (OK, None),  # channels averaged, then resampled
    "6 channels": (OK, None),  # channels averaged
    "int16 PCM": (OK, None),
    "int32 PCM": (OK, None),
    "float64 PCM": (OK, None),
    "NaN samples": ("NaN/Inf samples", None),
    "Inf samples": ("NaN/Inf samples", None),
    "full-scale clipping": (OK, None),  # decoded as is (±1.0); no warning
    "silence": (OK, None),
    "0.1 s": (OK, None),
    "31 s": (OK, "over the 30 s limit"),  # decoded in full; the long-audio policy decides (error|truncate|chunk)
    "10 min": (OK, "over the 30 s limit"),
    "a directory": ("not a file", None),
    "missing file": ("no such file", None),
    "unreadable file": ("permission denied", None),
    "spaces + non-ASCII path": (OK, None),
}
DURATION_S = {"0.1 s": 0.1, "31 s": 31.0, "10 min": 600.0}


def _error_of(case):
  loader, policy = EXPECTED[case]
  return loader if loader != OK else policy


@pytest.fixture(scope="module")
def corpus():
  folder = tempfile.mkdtemp(prefix="bad corpus ")
  os.chmod(folder, 0o755)  # another user (see the unreadable case) can look inside
  yield bad_audio_corpus.build(folder)
  os.chmod(os.path.join(folder, "unreadable.wav"), 0o600)
  shutil.rmtree(folder)


def _skip_if_unreadable_is_readable(corpus, case):
  if case == "unreadable file" and bad_audio_corpus.unreadable_is_readable(corpus[case]):
    pytest.skip("permissions do not deny reads for this user (root); covered by "
                "test_unreadable_file_for_an_unprivileged_process")


def test_corpus_covers_every_expected_case(corpus):
  assert sorted(corpus) == sorted(EXPECTED)


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_loader(corpus, case):
  _skip_if_unreadable_is_readable(corpus, case)
  t0 = time.time()
  expected = EXPECTED[case][0]
  if expected == OK:
    audio = load_audio(corpus[case])
    assert audio.dtype == np.float32 and audio.ndim == 1 and np.all(np.isfinite(audio))
    assert abs(audio.size / 16000 - DURATION_S.get(case, 1.0)) < 0.01  # no silent truncation or rate mix-up
    assert np.max(np.abs(audio)) <= (1.0 + 1e-6 if case == "full-scale clipping" else 0.35)
  else:
    with pytest.raises(AudioError) as e:
      load_audio(corpus[case])
    assert str(e.value).startswith(corpus[case] + ": ") and expected in str(e.value)
    assert "\n" not in str(e.value)
  assert time.time() - t0 < LIMIT_S


def _without_dac_override(cmd):
  """`cmd` run so that file permissions apply: as root, with CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH dropped
  from the bounding set (setpriv), since chmod 000 does not deny reads to root otherwise."""
  if os.geteuid() != 0:
    return cmd
  if not shutil.which("setpriv"):
    pytest.skip("running as root without setpriv: chmod 000 cannot deny reads here")
  return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] + cmd


def test_unreadable_file_for_an_unprivileged_process(corpus):
  path = corpus["unreadable file"]
  code = f"from qwen_audio_jax.audio.load import load_audio\nload_audio({path!r})"
  proc = subprocess.run(_without_dac_override([sys.executable, "-c", code]), capture_output=True, text=True,
                        cwd=ROOT, timeout=120, env=dict(os.environ, PYTHONPATH=ROOT))
  assert proc.returncode != 0
  assert f"AudioError: {path}: permission denied" in proc.stderr, proc.stderr[-1500:]


# --- training data path ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def train_manifest(corpus):
  path = os.path.join(os.path.dirname(corpus["ok 16 kHz wav"]), "train.jsonl")
  with open(path, "w", encoding="utf-8") as f:
    for k, (case, audio) in enumerate(sorted(corpus.items())):
      f.write(json.dumps({"audio": audio, "task": "asr", "lang": "en", "text": "a tone", "id": f"c{k}"},
                         ensure_ascii=False) + "\n")
  return path


def test_training_examples_work_or_are_bad_with_one_line(corpus, train_manifest):
  encoder = ExampleEncoder(family="qwen-audio", max_tokens=512)
  records = {r["audio"]: r for r in read_manifest(train_manifest)}
  for case, path in corpus.items():
    if case == "unreadable file" and bad_audio_corpus.unreadable_is_readable(path):
      continue
    t0 = time.time()
    cause = _error_of(case)
    if cause is None:
      assert len(encoder.encode(records[path]).ids) > 0, case
    else:
      with pytest.raises(DATA_ERRORS) as e:
        encoder.encode(records[path])
      assert path in str(e.value) and cause in str(e.value) and "\n" not in str(e.value), (case, str(e.value))
    assert time.time() - t0 < LIMIT_S, case


def test_training_iterator_counts_bad_examples_and_stops_over_the_fraction(corpus, train_manifest):
  from qwen_audio_jax.data import config as data_config, pipeline
  cfg = data_config.default_config()
  cfg.sources = []
  cfg.train_manifest = train_manifest
  cfg.seq_buckets = (256,)
  cfg.max_bad_fraction, cfg.min_examples_for_bad_check, cfg.max_retries = 1.0, 1, 0
  it = pipeline.make_train_iterator(cfg, global_batch_size=len(corpus), seed=0)
  try:
    batches = [next(it) for _ in range(3)]
  finally:
    it.close()
  m = it.metrics()
  bad_cases = sum(_error_of(c) is not None for c in corpus)
  assert m["tried"] == 3 * len(corpus) and 0 < m["bad"] < m["tried"]
  assert abs(m["bad_fraction"] - bad_cases / len(corpus)) < 0.25  # sampled with replacement-free shuffles
  assert sum(int(np.sum(b["example_mask"])) for b in batches) == m["tried"] - m["bad"]
  cfg.max_bad_fraction = 0.05
  it = pipeline.make_train_iterator(cfg, global_batch_size=len(corpus), seed=0)
  with pytest.raises(pipeline.DataQualityError) as e:
    try:
      next(it)
    finally:
      it.close()
  message = str(e.value)
  assert "over max_bad_fraction=5.00%" in message and "last bad: manifest" not in message
  assert any(path in message for path in corpus.values()) and "\n" not in message


@pytest.mark.parametrize("line,cause", [
    ('{"audio": "a.wav", "task": "asr"', "invalid JSON"),
    ('{"audio": "a.wav", "task": "asr", "lang": "en"}', "missing field 'text'"),
    ('{"audio": 3, "task": "asr", "lang": "en", "text": "x"}', "field 'audio' must be a string, got 3"),
    ('{"audio": "a.wav", "task": ["asr"], "lang": "en", "text": "x"}', "field 'task' must be a string"),
    ('{"audio": "a.wav", "task": "asr", "lang": "en", "text": null}', "field 'text' must be a string or number"),
    ('["audio", "a.wav"]', "expected a JSON object"),
])
def test_bad_manifest_line_is_one_line_naming_file_and_line(tmp_path, line, cause):
  path = tmp_path / "m.jsonl"
  good = json.dumps({"audio": "a.wav", "task": "asr", "lang": "en", "text": "x"})
  path.write_text(good + "\n" + line + "\n")
  with pytest.raises(ManifestError) as e:
    read_manifest(path)
  assert str(e.value).startswith(f"{path}:2: ") and cause in str(e.value) and "\n" not in str(e.value), str(e.value)
