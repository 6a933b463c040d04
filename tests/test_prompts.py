"""Prompts: eval-script task prompts (spec §5), the 758-id example (§3.7), ChatML (§4.4), Qwen2-Audio
chat (§8), audio-span expansion and mismatch errors, loss masks and output parsers."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen_audio_jax.audio import lengths
from qwen_audio_jax.prompts import (
    AudioMismatchError,
    PromptError,
    SequenceTooLongError,
    TASKS,
    base_answer,
    build_training_example,
    chat_answer,
    chat_stop_words,
    check_audio_spans,
    expand_audio,
    format_note_analysis,
    format_word_timestamps,
    from_list_format,
    list_audio_paths,
    make_chat_context,
    make_qwen2_audio_context,
    parse_note_analysis,
    parse_word_timestamps,
    render_qwen2_audio_chat,
    s2tt_languages,
    strip_tags,
    task_prompt,
)
from qwen_audio_jax.tokenizer import get_tokenizer

PATH = "/data/librispeech/1089-134686-0000.flac"


@pytest.fixture(scope="module")
def tok():
  return get_tokenizer("qwen-audio")


@pytest.fixture(scope="module")
def tok2():
  return get_tokenizer("qwen2-audio")


def test_worked_asr_example_758_ids(tok):
  n = lengths.audio_tokens(30 * 16000)
  assert n == 750
  prompt = task_prompt("asr", PATH, lang="en")
  ids = expand_audio(tok.encode(prompt), [n], tok)
  expected = [155163] + [151851] * 750 + [155164] + [151852, 151859, 151855, 151859, 151868, 154877]
  assert len(ids) == 758
  assert ids == expected
  check_audio_spans(ids, [n], tok)


# Prompts after `<audio>{path}</audio>`, copied from the spec §5 table (eval_audio/*.py).
EVAL_PROMPTS = [
    ("asr", {"lang": "en"}, "<|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>"),
    ("asr", {"lang": "zh"}, "<|startoftranscript|><|zh|><|transcribe|><|zh|><|notimestamps|><|wo_itn|>"),
    ("s2tt", {"src": "en", "tgt": "de"},
     "<|startoftranscript|><|en|><|translate|><|de|><|notimestamps|><|itn|>"),
    ("s2tt", {"src": "zh", "tgt": "en"},
     "<|startoftranscript|><|zh|><|translate|><|en|><|notimestamps|><|itn|>"),
    ("srwt", {"lang": "zh"}, "<|startoftranscript|><|zh|><|transcribe|><|zh|><|timestamps|><|0.00|>"),
    ("aac", {}, "<|startofanalysis|><|unknown|><|caption|><|en|><|notimestamps|><|caption_clotho|>"),
    ("asc", {}, "<|startofanalysis|><|unknown|><|keyword|><|en|><|notimestamps|><|scene|>"),
    ("ser", {}, "<|startofanalysis|><|en|><|keyword|><|en|><|notimestamps|><|emotion_recognition|>"),
    ("aqa", {"question": "Is there a dog barking?"},
     "<|startofanalysis|><|en|><|question|>Is there a dog barking?<|answer|>"),
    ("vsc", {}, "<|startofanalysis|><|en|><|keyword|><|en|><|notimestamps|><|vocal_classification|>"),
    ("mna", {}, "<|startofanalysis|><|unknown|><|keyword|><|en|><|notimestamps|><|note_analysis|>"),
]


@pytest.mark.parametrize("task,fields,tags", EVAL_PROMPTS)
def test_task_prompts_match_eval_scripts(tok, task, fields, tags):
  expected = f"<audio>{PATH}</audio>{tags}"
  prompt = task_prompt(task, PATH, **fields)
  assert prompt == expected
  assert tok.encode(prompt) == tok.encode(expected)
  ids = expand_audio(prompt, [3], tok)
  assert ids[:5] == [155163, 151851, 151851, 151851, 155164]


def test_every_task_is_covered_and_tags_are_single_ids(tok):
  assert {t for t, _, _ in EVAL_PROMPTS} == set(TASKS) == {
      "asr", "s2tt", "srwt", "aac", "asc", "ser", "aqa", "vsc", "mna"}
  order = ("asr", "s2tt", "srwt", "aac", "asc", "ser", "aqa", "vsc", "mna")
  budgets = [TASKS[t].max_new_tokens for t in order]
  assert budgets == [256, 256, 256, 30, 10, 4, 4, 4, 30]
  tag_ids = tok.encode(task_prompt("mna", "x.wav"))[-6:]
  assert tag_ids == [151853, 151858, 151857, 151859, 151868, 154889]
  aqa = tok.encode(task_prompt("aqa", "x.wav", question="Why?"))
  assert aqa[-6:] == [151853, 151859, 155152] + tok.encode("Why?") + [155153]
  srwt = tok.encode(task_prompt("srwt", "x.wav", lang="en"))
  assert srwt[-6:] == [151852, 151859, 151855, 151859, 151870, 151871]


def test_task_prompt_errors():
  with pytest.raises(PromptError, match="needs fields"):
    task_prompt("asr", PATH)
  with pytest.raises(PromptError, match="'xx'"):
    task_prompt("asr", PATH, lang="xx")
  with pytest.raises(PromptError, match="unknown"):
    task_prompt("lid", PATH)
  assert s2tt_languages("covost2_en_de_test") == ("en", "de")


# --- audio expansion --------------------------------------------------------------------------

def test_audio_count_mismatch_raises(tok, tok2):
  two = "<audio>a.wav</audio> and <audio>b.wav</audio>"
  assert list_audio_paths(two) == ["a.wav", "b.wav"]
  with pytest.raises(AudioMismatchError, match=r"1 audio\(s\) but 2 placeholder span"):
    expand_audio(two, [5], tok)
  with pytest.raises(AudioMismatchError, match="never closed"):
    expand_audio(tok.encode("<audio>a.wav"), [5], tok)
  with pytest.raises(AudioMismatchError, match="751 audio tokens"):
    expand_audio(two, [5, 751], tok)
  with pytest.raises(AudioMismatchError, match="0 audio tokens"):
    expand_audio(two, [0, 5], tok)
  good = expand_audio(two, [4, 6], tok)
  check_audio_spans(good, [4, 6], tok)
  with pytest.raises(AudioMismatchError, match=r"lengths \[4, 6\] for feature counts \[4, 7\]"):
    check_audio_spans(good, [4, 7], tok)
  with pytest.raises(AudioMismatchError):
    check_audio_spans(good[:-8], [4, 6], tok)  # truncated inside the second span
  with pytest.raises(AudioMismatchError, match="2 audio"):
    expand_audio("Audio 1: <|AUDIO|>", [3, 3], tok2)


def test_qwen2_audio_placeholder_expansion(tok2):
  bos, pad, eos = 151647, 151646, 151648
  wrapped = expand_audio("<|audio_bos|><|AUDIO|><|audio_eos|>hi", [4], tok2)
  assert wrapped == [bos] + [pad] * 4 + [eos] + tok2.encode("hi")
  assert expand_audio("<|AUDIO|>hi", [4], tok2) == wrapped  # bos/eos added when both absent
  assert expand_audio(wrapped, [4], tok2) == wrapped  # already expanded: unchanged
  with pytest.raises(AudioMismatchError, match="only bos"):
    expand_audio("<|audio_bos|><|AUDIO|>hi", [4], tok2)
  with pytest.raises(AudioMismatchError):
    expand_audio(wrapped, [5], tok2)
  check_audio_spans(wrapped, [4], tok2)


# --- ChatML (Qwen-Audio-Chat) -----------------------------------------------------------------

def test_from_list_format_and_stop_words(tok):
  text = from_list_format([{"audio": "a.wav"}, {"text": "What is this?"}, {"audio": "b.wav"}])
  assert text == "Audio 1:<audio>a.wav</audio>\nWhat is this?Audio 2:<audio>b.wav</audio>\n"
  assert chat_stop_words(tok) == [[151645], [151644]]


def test_chat_context_layout(tok):
  enc = tok.encode
  ctx = make_chat_context(tok, "How are <|im_start|> you?", history=[("Hi", "Hello!")])
  system = [151644, 8948, 198] + enc("You are a helpful assistant.") + [151645]
  expected = (system + [198, 151644, 872, 198] + enc("Hi") + [151645, 198, 151644, 77091, 198] + enc("Hello!")
              + [151645, 198, 151644, 872, 198] + enc("How are <|im_start|> you?", allowed_special=set())
              + [151645, 198, 151644, 77091, 198])
  assert ctx.ids == expected
  assert ctx.ids.count(151644) == 5  # the user's literal <|im_start|> stayed text
  assert ctx.text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi"
                      "<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n"
                      "How are <|im_start|> you?<|im_end|>\n<|im_start|>assistant\n")
  assert ctx.dropped_turns == 0


def test_chat_context_audio_and_trimming(tok):
  history = [(from_list_format([{"audio": f"h{k}.wav"}, {"text": f"turn {k}"}]), f"answer {k}")
             for k in range(3)]
  query = from_list_format([{"audio": "q.wav"}, {"text": "and now?"}])
  counts = [5, 6, 7, 8]
  full = make_chat_context(tok, query, history, audio_tokens=counts)
  assert full.audio_indices == (0, 1, 2, 3) and full.dropped_turns == 0
  check_audio_spans(full.ids, counts, tok)
  first = full.ids.index(155163)
  assert full.ids[first - 4:first] == tok.encode("Audio 1:")
  # Window that fits the newest two history turns exactly -> strict '<' drops the older one too.
  newest_two = make_chat_context(tok, query, history[1:], audio_tokens=counts[1:])
  base = make_chat_context(tok, query, [], audio_tokens=counts[3:])
  system_len = base.ids.index(151645) + 1
  query_len = len(base.ids) - system_len
  history_len = len(newest_two.ids) - system_len - query_len
  window = system_len + history_len
  fits = make_chat_context(tok, query, history, max_window_size=window + 1, audio_tokens=counts)
  assert fits.ids == newest_two.ids and fits.audio_indices == (1, 2, 3) and fits.dropped_turns == 1
  tight = make_chat_context(tok, query, history, max_window_size=window, audio_tokens=counts)
  assert tight.dropped_turns == 2 and tight.audio_indices == (2, 3)
  with pytest.raises(AudioMismatchError, match="audio_tokens=None"):
    make_chat_context(tok, query, history)
  with pytest.raises(AudioMismatchError, match="4 audio placeholder"):
    make_chat_context(tok, query, history, audio_tokens=[5, 6, 7])


# --- Qwen2-Audio chat --------------------------------------------------------------------------

def _hf_template_render(messages):
  """transformers' Qwen2AudioProcessor default chat template rendered with jinja2 (reference)."""
  import jinja2
  from transformers import Qwen2AudioProcessor
  template = Qwen2AudioProcessor.default_chat_template.fget(None)
  return jinja2.Environment().from_string(template).render(messages=messages, add_generation_prompt=True)


def test_qwen2_audio_chat_matches_hf_template(tok2):
  messages = [
      {"role": "user", "content": [{"type": "audio", "audio_url": "glass.mp3"},
                                   {"type": "text", "text": "What's that sound?"}]},
      {"role": "assistant", "content": "It is the sound of glass shattering."},
      {"role": "user", "content": [{"type": "audio", "audio_url": "cough.wav"},
                                   {"type": "text", "text": "And this?"}]},
  ]
  text = render_qwen2_audio_chat(messages)
  assert text == _hf_template_render(messages)
  assert "Audio 2: <|audio_bos|><|AUDIO|><|audio_eos|>\nAnd this?" in text
  ids = make_qwen2_audio_context(tok2, messages, [3, 2])
  assert ids[:3] == [151644, 8948, 198] and ids[-3:] == [151644, 77091, 198]
  first = ids.index(151647)
  assert ids[first - 5:first] == tok2.encode("Audio 1: ")
  assert ids[first:first + 5] == [151647, 151646, 151646, 151646, 151648]
  check_audio_spans(ids, [3, 2], tok2)


# --- loss mask ---------------------------------------------------------------------------------

def test_loss_mask():
  ex = build_training_example([10, 11, 12], [20, 21], eod_id=151643)
  np.testing.assert_array_equal(ex.ids, [10, 11, 12, 20, 21, 151643])
  np.testing.assert_array_equal(ex.loss_mask, [0, 0, 0, 1, 1, 1])
  assert ex.ids.dtype == np.int32 and ex.loss_mask.dtype == np.int32
  again = build_training_example([10], [20, 151643], eod_id=151643)
  np.testing.assert_array_equal(again.ids, [10, 20, 151643])
  with pytest.raises(SequenceTooLongError, match="= 6 > max_length 5"):
    build_training_example([10, 11, 12], [20, 21], eod_id=151643, max_length=5)


# --- parsers -----------------------------------------------------------------------------------

SRWT = "<|0.00|><|sil|><|0.54|>面<|0.86|>条<|1.17|>机<|1.46|><|sil|><|2.01|>"


def test_srwt_parse_round_trip(tok):
  words = parse_word_timestamps(SRWT)
  assert words == [
      {"word": "<|sil|>", "start": 0.0, "end": 0.54}, {"word": "面", "start": 0.54, "end": 0.86},
      {"word": "条", "start": 0.86, "end": 1.17}, {"word": "机", "start": 1.17, "end": 1.46},
      {"word": "<|sil|>", "start": 1.46, "end": 2.01}]
  assert format_word_timestamps(words) == SRWT
  ids = tok.encode(SRWT)
  time_ids = [i for i in ids if i in tok.timestamp_ids]
  assert time_ids == [151871, 151871 + 54, 151871 + 86, 151871 + 117, 151871 + 146, 151871 + 201]
  assert ids.count(151869) == 2
  kept = tok.decode(ids, skip_special_tokens=True, keep_timestamps=True)  # <|sil|> dropped
  assert kept == "<|0.00|><|0.54|>面<|0.86|>条<|1.17|>机<|1.46|><|2.01|>"
  assert parse_word_timestamps(kept) == words[1:4]
  generated = "<|startoftranscript|><|zh|><|transcribe|><|zh|><|timestamps|>" + SRWT + "<|endoftext|>"
  assert parse_word_timestamps(generated) == words
  with_gap = [{"word": " a", "start": 0.1, "end": 0.2}, {"word": " b", "start": 0.5, "end": 0.7}]
  gap = format_word_timestamps(with_gap)
  assert gap == "<|0.10|> a<|0.20|><|0.50|> b<|0.70|>"
  assert parse_word_timestamps(gap) == with_gap


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.text(st.characters(blacklist_characters="<>|"), min_size=1, max_size=5),
                          st.integers(1, 300)), min_size=1, max_size=8))
def test_srwt_round_trip_hypothesis(items):
  t, words = 0, []
  for word, step in items:
    words.append({"word": word, "start": t / 100, "end": (t + step) / 100})
    t += step
  words = [w for w in words if w["end"] <= 30.0]
  assert parse_word_timestamps(format_word_timestamps(words)) == words


def test_note_analysis_parse():
  text = ("<|pitch|><|midi_pitch_60|><|velocity|><|midi_velocity_100|><|instrument|>keyboard_acoustic"
          "<|sonic|>bright, percussive<|endoftext|>")
  note = parse_note_analysis(text)
  assert note == {"pitch": 60, "velocity": 100, "instrument": "keyboard_acoustic",
                  "sonic": ["bright", "percussive"]}
  assert parse_note_analysis(format_note_analysis(**note)) == note
  empty = {"pitch": None, "velocity": None, "instrument": "", "sonic": []}
  assert parse_note_analysis("nothing here") == empty


def test_answer_extraction(tok):
  reply = tok.encode(" It is a dog barking. ") + [151645, 198, 151644] + tok.encode("user")
  assert chat_answer(reply, tok) == "It is a dog barking."
  base = tok.encode("<|en|> the cat sat.", allowed_special="all") + [151643] + tok.encode("junk")
  assert base_answer(base, tok) == "<|en|> the cat sat."
  assert strip_tags(base_answer(base, tok)) == "the cat sat."
  assert strip_tags("<|0.00|>hello<|0.50|> world<|1.00|>") == "hello world"
