"""Fuzzing (hypothesis, 2,000 examples each, no model): the tokenizer round trip, prompt building and audio
placeholder expansion (malformed tags, unmatched `<audio>`, too many or too few audios), word-timestamp
parsing, and manifest parsing. Every input either works or raises the module's own one-line error; no
other exception type, no silent mismatch.
"""

import json
import os
import tempfile
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qwen_audio_jax.audio.lengths import MAX_AUDIO_TOKENS
from qwen_audio_jax.data.manifests import ManifestError, read_manifest
from qwen_audio_jax.prompts import expand_audio, task_prompt
from qwen_audio_jax.prompts.audio_spans import AudioMismatchError, check_audio_spans, list_audio_paths
from qwen_audio_jax.prompts.parsers import format_word_timestamps, parse_word_timestamps
from qwen_audio_jax.prompts.tasks import PromptError
from qwen_audio_jax.tokenizer import get_tokenizer

N = int(os.environ.get("FUZZ_EXAMPLES", "2000"))
FUZZ = settings(max_examples=N, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=("Cs",)),
               max_size=60)
TAGS = ["<audio>", "</audio>", "<|en|>", "<|startoftranscript|>", "<|endoftext|>", "<|0.50|>", "<|AUDIO|>",
        "<|audio_bos|>", "<|audio_eos|>", "<|im_start|>", "<", "|>", "a.wav", " "]
MALFORMED = st.lists(st.one_of(st.sampled_from(TAGS), st.text(max_size=4)), max_size=12).map("".join)


@pytest.fixture(scope="module")
def tok():
  return get_tokenizer("qwen-audio")


@pytest.fixture(scope="module")
def tok2():
  return get_tokenizer("qwen2-audio")


@FUZZ
@given(text=TEXT)
def test_tokenizer_round_trip(tok, text):
  nfc = unicodedata.normalize("NFC", text)
  ids = tok.encode(text, allowed_special=set())
  assert all(0 <= i < tok.vocab_size for i in ids)
  assert tok.decode(ids) == nfc  # specials in the text are plain text when not allowed
  assert tok.decode(tok.encode(nfc)) == nfc


@FUZZ
@given(path=st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="<>"), min_size=1,
                    max_size=30),
       task=st.sampled_from(["asr", "aac", "asc"]), n=st.integers(1, MAX_AUDIO_TOKENS))
def test_prompt_build_expand_and_check(tok, path, task, n):
  fields = {"asr": {"lang": "en"}, "aac": {}, "asc": {}}[task]
  try:
    prompt = task_prompt(task, path, **fields)
  except PromptError:
    return
  assert list_audio_paths(prompt) == [path]
  ids = expand_audio(prompt, [n], tok)
  assert ids.count(tok.audio_pad_id) == n and ids.count(tok.audio_start_id) == 1
  check_audio_spans(ids, [n], tok)
  with pytest.raises(AudioMismatchError):  # too many audios for the prompt
    expand_audio(prompt, [n, n], tok)
  end = ids.index(tok.audio_end_id)
  with pytest.raises(AudioMismatchError):  # a prompt truncated inside the span is caught before the model
    check_audio_spans(ids[:end], [n], tok)
  with pytest.raises(AudioMismatchError):  # one audio token short
    check_audio_spans(ids[:end - 1] + ids[end:], [n], tok)


@FUZZ
@given(text=MALFORMED, counts=st.lists(st.integers(-2, MAX_AUDIO_TOKENS + 2), max_size=4))
def test_malformed_audio_tags_raise_one_error_type(tok, tok2, text, counts):
  for t in (tok, tok2):
    try:
      ids = expand_audio(text, counts, t)
    except AudioMismatchError as e:
      assert "\n" not in str(e)
      continue
    assert all(1 <= n <= MAX_AUDIO_TOKENS for n in counts)
    check_audio_spans(ids, counts, t)  # whatever expanded is consistent
    assert ids.count(t.audio_pad_id) == sum(counts)
    if t is tok:  # closed tags: no stray <audio> or </audio> left behind
      assert ids.count(t.audio_start_id) == ids.count(t.audio_end_id) == len(counts)


WORD = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="<>|"), min_size=1, max_size=6)


@FUZZ
@given(items=st.lists(st.tuples(WORD, st.integers(0, 40), st.integers(1, 300)), min_size=0, max_size=10))
def test_word_timestamps_round_trip(items):
  t, words = 0, []
  for word, gap, length in items:
    start = t + gap
    if start + length > 3000:
      break
    words.append({"word": word, "start": start / 100, "end": (start + length) / 100})
    t = start + length
  text = format_word_timestamps(words)
  assert parse_word_timestamps(text) == words
  assert parse_word_timestamps("<|en|>" + text + "<|endoftext|>") == words


@FUZZ
@given(text=MALFORMED)
def test_word_timestamps_never_crash(text):
  words = parse_word_timestamps(text)
  for w in words:
    assert 0.0 <= w["start"] <= 30.0 and 0.0 <= w["end"] <= 30.0 and w["word"]


JSON_VALUE = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                      max_size=3), max_leaves=6)
FIELDS = ["audio", "task", "lang", "text", "answer", "prompt", "gt", "source", "id", "question", "messages"]
RECORD = st.dictionaries(st.sampled_from(FIELDS), JSON_VALUE | st.sampled_from(["asr", "en", "a.wav", ""]),
                         max_size=7)
LINE = st.one_of(RECORD.map(json.dumps), st.text(max_size=20), JSON_VALUE.map(json.dumps))


@pytest.fixture(scope="module")
def folder():
  with tempfile.TemporaryDirectory() as d:
    yield d


@FUZZ
@given(lines=st.lists(LINE, min_size=0, max_size=4))
def test_manifest_parsing_works_or_raises_one_line(folder, lines):
  path = os.path.join(folder, "m.jsonl")
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  try:
    records = read_manifest(path)
  except ManifestError as e:
    assert "\n" not in str(e) and str(e).startswith(path)
    return
  for r in records:
    assert isinstance(r, dict) and r
