"""Tokenizer: parity with tiktoken on qwen.tiktoken, special-token ids (spec §4.2), SentencePiece."""

import base64
import pickle
import time
import unicodedata

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen_audio_jax.prompts import expand_audio, task_prompt
from qwen_audio_jax.prompts.tasks import TASKS
from qwen_audio_jax.tokenizer import (
    SEED_TEXTS,
    SpecialTokenError,
    TokenizerError,
    VocabFileError,
    default_vocab_path,
    get_tokenizer,
    train_sentencepiece,
)

# Spec §4.1 regex, written out here independently of the package.
SPEC_PAT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
            r"""\s*[\r\n]+|\s+(?!\S)|\s+""")

MULTILINGUAL = [
    "And so, my fellow Americans: ask not what your country can do for you.",
    "今天天气很好，我们去公园吧！123456789",
    "Grüße aus München – Straße, Maß, Äpfel; 'm 'll 'RE",
    "contractions glued to letters: we'llbe, it'sok, HE'DGO, they'veit",
    "¿Qué tal? Mañana vamos a la playa, señor.",
    "안녕하세요, 반갑습니다. 음성 인식 테스트입니다.",
    "Ça va ? L'été à Paris, c'est génial… «citation»",
    "こんにちは、世界。カタカナとひらがなと漢字。",
    "Perché no? Città, università, caffè.",
    "emoji 😀👍🏽👨‍👩‍👧 flags 🇩🇪 and ZWJ",
    "ctrl \x00 nul \t tab \r\n crlf \x1b[31m esc \x7f del \u2028 sep",
    "e\u0301 composed by NFC; Å vs A\u030a; ﬁ ligature stays",
    "   leading spaces, trailing spaces   \n\n\nnewlines",
]


@pytest.fixture(scope="session")
def tok():
  return get_tokenizer("qwen-audio")


@pytest.fixture(scope="session")
def reference():
  """tiktoken's own Encoding from the same file: spec regex, no specials."""
  with open(default_vocab_path(), "rb") as f:
    ranks = {base64.b64decode(t): int(r) for t, r in (line.split() for line in f.read().splitlines() if line)}
  return tiktoken.Encoding("reference", pat_str=SPEC_PAT, mergeable_ranks=ranks, special_tokens={})


def test_vocab_size_and_special_count(tok):
  assert tok.vocab_size == 155165
  assert len(tok.special_tokens) == 3522
  assert sorted(tok.special_tokens.values()) == list(range(151643, 155165))


@pytest.mark.parametrize("text", MULTILINGUAL)
def test_matches_tiktoken_reference(tok, reference, text):
  nfc = unicodedata.normalize("NFC", text)
  ids = tok.encode(text)
  assert ids == reference.encode_ordinary(nfc)
  assert tok.decode(ids) == reference.decode(ids) == nfc


def test_nfc_is_applied(tok, reference):
  nfd = "Cafe\u0301 A\u030a"
  assert tok.encode(nfd) == reference.encode_ordinary("Café Å")
  assert tok.encode(nfd) != reference.encode_ordinary(nfd)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=("Cs",)),
               max_size=120))
def test_round_trip_hypothesis(tok, reference, text):
  nfc = unicodedata.normalize("NFC", text)
  ids = tok.encode(text, allowed_special=set())
  assert ids == reference.encode_ordinary(nfc)
  assert tok.decode(ids) == nfc
  assert tok.decode(tok.encode(text)) == nfc


SPOT_IDS = {
    "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
    "<|extra_0|>": 151646, "<|extra_204|>": 151850,
    "[[[AUDIO:modality]]]": 151851, "<|startoftranscript|>": 151852, "<|startofanalysis|>": 151853,
    "<|translate|>": 151854, "<|transcribe|>": 151855, "<|caption|>": 151856, "<|keyword|>": 151857,
    "<|unknown|>": 151858, "<|en|>": 151859, "<|zh|>": 151860, "<|de|>": 151861, "<|es|>": 151862,
    "<|ko|>": 151863, "<|fr|>": 151864, "<|ja|>": 151865, "<|it|>": 151866, "<|zh_tr|>": 151867,
    "<|notimestamps|>": 151868, "<|sil|>": 151869, "<|timestamps|>": 151870,
    "<|0.00|>": 151871, "<|0.01|>": 151872, "<|2.33|>": 151871 + 233, "<|30.00|>": 154871,
    "<|caption_audiocaps|>": 154872, "<|itn|>": 154876, "<|wo_itn|>": 154877,
    "<|startofentityvalue|>": 154878, "<|named_entity_recognition|>": 154882,
    "<|audio_grounding|>": 154883, "<|delim|>": 154886, "<|emotion_recognition|>": 154887,
    "<|note_analysis|>": 154889, "<|pitch|>": 154890, "<|midi_pitch_0|>": 154891,
    "<|midi_pitch_127|>": 155018, "<|velocity|>": 155019, "<|midi_velocity_0|>": 155020,
    "<|midi_velocity_127|>": 155147, "<|sonic|>": 155148, "<|instrument|>": 155149,
    "<|question|>": 155152, "<|answer|>": 155153, "<|scene|>": 155155,
    "<|vocal_classification|>": 155157, "<|speech_edit|>": 155162, "<audio>": 155163, "</audio>": 155164,
}


def test_special_ids(tok):
  for token, expected in SPOT_IDS.items():
    assert tok.encode(token) == [expected], token
    assert tok.token_to_id(token) == expected
    assert tok.id_to_token(expected) == token
  assert (tok.eod_id, tok.im_start_id, tok.im_end_id) == (151643, 151644, 151645)
  assert (tok.audio_start_id, tok.audio_end_id, tok.audio_pad_id) == (155163, 155164, 151851)


def spec_special_table() -> dict[int, str]:
  """All 3,522 Qwen-Audio specials written from the rows of spec §4.2 (id ranges and surface forms), not
  from the package's tuples: a swapped, dropped or duplicated entry there fails the equality below."""
  rows = [  # (first id, surface forms) exactly as the spec's table lists them
      (151643, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]),
      (151646, [f"<|extra_{i}|>" for i in range(205)]),
      (151851, ["[[[AUDIO:modality]]]", "<|startoftranscript|>", "<|startofanalysis|>"]),
      (151854, ["<|translate|>", "<|transcribe|>", "<|caption|>", "<|keyword|>", "<|unknown|>"]),
      (151859, ["<|en|>", "<|zh|>", "<|de|>", "<|es|>", "<|ko|>", "<|fr|>", "<|ja|>", "<|it|>", "<|zh_tr|>"]),
      (151868, ["<|notimestamps|>", "<|sil|>", "<|timestamps|>"]),
      (151871, [f"<|{i * 0.01:.2f}|>" for i in range(3001)]),  # tokenization_qwen.py's own formatting
      (154872, ["<|caption_audiocaps|>", "<|caption_clotho|>", "<|audioset_ontology|>", "<|caption_plain|>",
                "<|itn|>", "<|wo_itn|>"]),
      (154878, ["<|startofentityvalue|>", "<|endofentityvalue|>", "<|startofentitytype|>",
                "<|endofentitytype|>", "<|named_entity_recognition|>"]),
      (154883, ["<|audio_grounding|>", "<|startofword|>", "<|endofword|>", "<|delim|>"]),
      (154887, ["<|emotion_recognition|>", "<|music_description|>", "<|note_analysis|>"]),
      (154890, ["<|pitch|>"] + [f"<|midi_pitch_{i}|>" for i in range(128)]),
      (155019, ["<|velocity|>"] + [f"<|midi_velocity_{i}|>" for i in range(128)]),
      (155148, ["<|sonic|>", "<|instrument|>", "<|speaker_meta|>", "<|song_meta|>", "<|question|>", "<|answer|>",
                "<|choice|>", "<|scene|>", "<|event|>", "<|vocal_classification|>", "<|speech_understanding|>",
                "<|scenario|>", "<|action|>", "<|entities|>", "<|speech_edit|>"]),
      (155163, ["<audio>", "</audio>"]),
  ]
  table = {}
  for first, forms in rows:
    for k, form in enumerate(forms):
      assert first + k not in table, first + k
      table[first + k] = form
  return table


def test_complete_special_table_matches_spec(tok):
  table = spec_special_table()
  assert len(table) == 3522 and sorted(table) == list(range(151643, 155165))  # the spec rows tile the range
  assert {i: t for t, i in tok.special_tokens.items()} == table
  for i, form in table.items():
    assert tok.encode(form, allowed_special="all") == [i], form
    assert tok.decode([i]) == form


def test_qwen2_audio_special_table():
  """Qwen2-Audio: names from transformers' Qwen2AudioProcessor defaults, <|AUDIO|> = 151646 from
  Qwen2AudioConfig; the Qwen2 base specials and bos 151643 / eos 151645 from the hub config (spec §8);
  <|audio_bos|> / <|audio_eos|> = 151647 / 151648 (spec §8: unverified beyond being the next two ids)."""
  import inspect
  from transformers import Qwen2AudioConfig, Qwen2AudioProcessor
  defaults = {k: v.default for k, v in inspect.signature(Qwen2AudioProcessor.__init__).parameters.items()}
  table = {151643: "<|endoftext|>", 151644: "<|im_start|>", 151645: "<|im_end|>",
           Qwen2AudioConfig().audio_token_index: defaults["audio_token"]}
  table.update({151647: defaults["audio_bos_token"], 151648: defaults["audio_eos_token"]})
  tok2 = get_tokenizer("qwen2-audio")
  assert {i: t for t, i in tok2.special_tokens.items()} == table
  assert (tok2.eod_id, tok2.im_start_id, tok2.im_end_id) == (151643, 151644, 151645)
  for i, form in table.items():
    assert tok2.encode(form, allowed_special="all") == [i], form


def test_time_tokens_match_reference_formatting(tok):
  # tokenization_qwen.py builds them as f"<|{i * 0.01:.2f}|>" for i in range(3001).
  for i in range(3001):
    assert tok.token_to_id(f"<|{i * 0.01:.2f}|>") == 151871 + i
  assert len(tok.timestamp_ids) == 3001


def test_readme_typo_is_not_special(tok):
  ids = tok.encode("<|startoftranscription|>")
  assert [tok.id_to_token(i) for i in ids] == [b"<", b"|", b"start", b"of", b"trans", b"cription", b"|", b">"]
  assert not any(tok.is_special(i) for i in ids)


def test_allowed_and_disallowed_special(tok, reference):
  text = "hi <|im_start|> there"
  assert 151644 in tok.encode(text)
  assert tok.encode(text, allowed_special=set()) == reference.encode_ordinary(text)
  only_audio = tok.encode("<audio>x</audio><|im_end|>", allowed_special={"<audio>", "</audio>"})
  assert only_audio[0] == 155163 and 155164 in only_audio and 151645 not in only_audio
  with pytest.raises(SpecialTokenError, match="im_start"):
    tok.encode(text, allowed_special=set(), disallowed_special="all")
  with pytest.raises(SpecialTokenError, match="startoftranscription"):
    tok.encode(text, allowed_special={"<|startoftranscription|>"})


def test_decode_skip_special_and_keep_timestamps(tok):
  ids = tok.encode("<|startoftranscript|><|en|><|0.54|>hello<|0.86|> world<|1.20|><|endoftext|>")
  assert tok.decode(ids, skip_special_tokens=True) == "hello world"
  kept = tok.decode(ids, skip_special_tokens=True, keep_timestamps=True)
  assert kept == "<|0.54|>hello<|0.86|> world<|1.20|>"
  assert tok.decode(ids).startswith("<|startoftranscript|><|en|>")
  with pytest.raises(TokenizerError, match="155165"):
    tok.decode([155165])


def test_regular_token_lookups(tok):
  assert tok.token_to_id(b"user") == tok.token_to_id("user") == 872
  assert tok.id_to_token(77091) == b"assistant"
  with pytest.raises(SpecialTokenError):
    tok.token_to_id("<|not_a_token|>")


def test_qwen2_audio_family(tok):
  tok2 = get_tokenizer("qwen2-audio")
  names = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]
  assert [tok2.token_to_id(n) for n in names] == list(range(151643, 151649))
  assert tok2.vocab_size == 151649
  assert (tok2.audio_pad_id, tok2.audio_start_id, tok2.audio_end_id) == (151646, 151647, 151648)
  assert tok2.encode(MULTILINGUAL[0]) == tok.encode(MULTILINGUAL[0])
  assert tok2.encode("<|en|>") != [151859]  # a Qwen-Audio tag is plain text for Qwen2-Audio
  from transformers import Qwen2AudioConfig  # the only id transformers pins for Qwen2-Audio
  assert Qwen2AudioConfig().audio_token_index == tok2.audio_pad_id


def test_pickle_round_trip(tok):
  clone = pickle.loads(pickle.dumps(tok))
  assert clone.encode(MULTILINGUAL[1]) == tok.encode(MULTILINGUAL[1])
  assert clone.family.name == "qwen-audio"


def test_vocab_file_errors(tmp_path):
  with pytest.raises(VocabFileError, match="not found"):
    get_tokenizer("qwen-audio", vocab_path=str(tmp_path / "missing.tiktoken"))
  lines = open(default_vocab_path(), "rb").read().splitlines()
  corrupt = tmp_path / "corrupt.tiktoken"
  corrupt.write_bytes(b"\n".join(lines[:10] + [b"%%%notbase64 10"] + lines[11:]))
  with pytest.raises(VocabFileError, match=":11: corrupt line"):
    get_tokenizer("qwen-audio", vocab_path=str(corrupt))
  short = tmp_path / "short.tiktoken"
  short.write_bytes(b"\n".join(lines[:1000]))
  with pytest.raises(VocabFileError, match="1000 ranks"):
    get_tokenizer("qwen-audio", vocab_path=str(short))
  with pytest.raises(ValueError, match="family"):
    get_tokenizer("qwen3-audio")


# --- SentencePiece backend ---------------------------------------------------------------------

PROMPT_FIELDS = {"asr": {"lang": "en"}, "s2tt": {"src": "en", "tgt": "de"}, "srwt": {"lang": "zh"},
                 "aqa": {"question": "Is it raining?"}}


@pytest.fixture(scope="module")
def spm_tok(tmp_path_factory):
  texts = list(SEED_TEXTS) + [task_prompt(t, "clip.wav", **PROMPT_FIELDS.get(t, {})) for t in TASKS]
  start = time.perf_counter()
  trained = train_sentencepiece(texts, vocab_size=4400, model_dir=str(tmp_path_factory.mktemp("spm")))
  trained.train_seconds = time.perf_counter() - start
  return trained


def test_sentencepiece_trains_fast_and_round_trips(spm_tok):
  assert spm_tok.train_seconds < 10.0
  assert spm_tok.vocab_size <= 4400
  for text in MULTILINGUAL:
    assert spm_tok.decode(spm_tok.encode(text)) == unicodedata.normalize("NFC", text)


def test_sentencepiece_specials_and_prompts(spm_tok, tok):
  tags = "<|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>"
  ids = spm_tok.encode(tags)
  names = ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|en|>", "<|notimestamps|>", "<|wo_itn|>"]
  assert ids == [spm_tok.token_to_id(t) for t in names]
  assert len(set(ids)) == 5 and all(spm_tok.is_special(i) for i in ids)
  literal = spm_tok.encode("say <|im_start|> now", allowed_special=set())
  assert spm_tok.im_start_id not in literal and spm_tok.decode(literal) == "say <|im_start|> now"
  with pytest.raises(SpecialTokenError):
    spm_tok.encode("<|im_end|>", allowed_special=set(), disallowed_special="all")
  expanded = expand_audio(task_prompt("asr", "a.wav", lang="en"), [7], spm_tok)
  assert expanded[:9] == [spm_tok.audio_start_id] + [spm_tok.audio_pad_id] * 7 + [spm_tok.audio_end_id]
  assert expanded[9:] == ids
  assert spm_tok.decode(expanded, skip_special_tokens=True) == ""
  reloaded = get_tokenizer("qwen-audio", vocab_path=spm_tok.model_path)
  assert reloaded.encode(MULTILINGUAL[2]) == spm_tok.encode(MULTILINGUAL[2])
  assert pickle.loads(pickle.dumps(spm_tok)).encode(tags) == ids


def test_sentencepiece_rejects_tiny_vocab(tmp_path):
  with pytest.raises(TokenizerError, match="too small"):
    train_sentencepiece(SEED_TEXTS, vocab_size=1000, model_dir=str(tmp_path))
