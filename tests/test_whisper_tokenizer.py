"""Whisper tokenizer against transformers' WhisperTokenizer (fast), offline.

No real Whisper vocabulary ships with any installed package, so the default tests train a small byte-level
BPE (`tokenizers`), add Whisper's specials in openai's order and write both forms the project reads: a
transformers tokenizer.json and an openai-style .tiktoken file of the same ranks. With
QWEN_AUDIO_WHISPER_TIKTOKEN=/path/to/multilingual.tiktoken (openai-whisper's asset) the same comparisons run
on the real vocabulary too (transformers side built with its TikTokenConverter).
"""

import json
import os

import pytest

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from conversion import tiny_models  # noqa: E402
from qwen_audio_jax.tokenizer import SEED_TEXTS, SpecialTokenError, TokenizerError, VocabFileError  # noqa: E402
from qwen_audio_jax.tokenizer import whisper_specials as ws  # noqa: E402
from qwen_audio_jax.tokenizer.whisper import get_whisper_tokenizer, whisper_prompt  # noqa: E402

TEXTS = SEED_TEXTS[:6] + (
    "Grüße aus München – Straße ♪♪ [MUSIC] (laughs) <<hi>> -- 'quoted'",
    "  leading spaces\n\nnewlines\t tab 😀👍🏽 ¿Qué tal? 안녕하세요 今天天气很好",
    " I'm here, you're there, it'll be fine; 3:45 pm, 1234567",
)
PROMPTS = [("en", "transcribe", False), ("de", "translate", True), ("haw", "transcribe", False),
           ("ja", "translate", False)]


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
  """(transformers WhisperTokenizer, ours from tokenizer.json, ours from .tiktoken, BPE ranks)."""
  d = tmp_path_factory.mktemp("wtok")
  json_path, tiktoken_path, n_ranks = tiny_models.whisper_vocab(str(d))
  hf = transformers.WhisperTokenizer.from_pretrained(str(d))
  n_vocab = n_ranks + len(ws.openai_specials(99))
  return hf, get_whisper_tokenizer(json_path), get_whisper_tokenizer(tiktoken_path, n_vocab), n_ranks


def _compare(hf, ours):
  for text in TEXTS:
    ids = hf.encode(text, add_special_tokens=False)
    assert [o.encode(text) for o in ours] == [ids] * len(ours), text
    full = whisper_prompt(ours[0], "de", "transcribe", True) + ids + [ours[0].timestamp_begin + 7, ours[0].eot]
    for skip in (False, True):  # transformers drops time tokens in both modes, like openai's decode
      ref = hf.decode(full, skip_special_tokens=skip, clean_up_tokenization_spaces=False)
      assert [o.decode(full, skip_special_tokens=skip) for o in ours] == [ref] * len(ours), (text, skip)
  for lang, task, timestamps in PROMPTS:
    hf.set_prefix_tokens(language=lang, task=task, predict_timestamps=timestamps)
    assert [whisper_prompt(o, lang, task, timestamps) for o in ours] == [hf.prefix_tokens] * len(ours)


def test_matches_transformers_whisper_tokenizer(vocab):
  hf, from_json, from_tiktoken, _ = vocab
  _compare(hf, [from_json, from_tiktoken])
  assert from_json.non_speech_tokens() == from_tiktoken.non_speech_tokens()
  assert from_json.vocab_size == from_tiktoken.vocab_size == len(hf)


def test_special_ids_follow_openai_layout(vocab):
  _, from_json, from_tiktoken, n = vocab
  for tok in (from_json, from_tiktoken):
    assert (tok.eot, tok.sot, tok.translate, tok.transcribe, tok.sot_lm, tok.sot_prev, tok.no_speech,
            tok.no_timestamps, tok.timestamp_begin) == (n, n + 1) + tuple(range(n + 101, n + 108))
    assert tok.languages["en"] == n + 2 and tok.languages["su"] == n + 100 and len(tok.languages) == 99
    assert tok.timestamp_id(30.0) == tok.vocab_size - 1 and tok.decode([tok.timestamp_id(1.5)], keep_timestamps=True) \
        == "<|1.50|>"
    assert whisper_prompt(tok, None, None) == [tok.sot, tok.no_timestamps]  # English-only models
  assert ws.LANGUAGES == tuple(transformers.models.whisper.tokenization_whisper.LANGUAGES)
  assert ws.openai_layout(51865) == (50257, 99) and ws.openai_layout(51866) == (50257, 100)
  assert ws.openai_layout(51864) == (50256, 99) and ws.openai_layout(96) is None


def test_tokenizer_json_without_time_tokens(vocab, tmp_path):
  """Older transformers exports list no time tokens: they follow <|notimestamps|>, as openai numbers them."""
  hf, full, _, _ = vocab
  json_path, _, _ = tiny_models.whisper_vocab(str(tmp_path), time_tokens=False)
  tok = get_whisper_tokenizer(json_path)
  assert (tok.vocab_size, tok.timestamp_begin) == (full.vocab_size, full.no_timestamps + 1)
  ids = whisper_prompt(tok, "en", "transcribe", True) + [tok.timestamp_id(0.0)] + tok.encode(" Hello there") + [
      tok.timestamp_id(1.24), tok.eot]
  assert tok.decode(ids, keep_timestamps=True) == full.decode(ids, keep_timestamps=True)
  assert "<|1.24|>Hello" not in tok.decode(ids) and tok.decode(ids, keep_timestamps=True).endswith(
      "<|0.00|> Hello there<|1.24|><|endoftext|>")
  assert tok.decode(ids, skip_special_tokens=True) == " Hello there" == hf.decode(ids, skip_special_tokens=True)


def test_decode_drops_a_previous_text_prompt(vocab):
  hf, tok, _, _ = vocab
  ids = [tok.sot_prev] + tok.encode(" earlier words") + whisper_prompt(tok) + tok.encode(" now") + [tok.eot]
  assert tok.decode(ids, skip_special_tokens=True) == " now" == hf.decode(ids, skip_special_tokens=True)


def test_checkpoint_directory_and_errors(vocab, tmp_path):
  _, _, _, n = vocab
  json_path, tiktoken_path, _ = tiny_models.whisper_vocab(str(tmp_path / "v"))
  ckpt = tmp_path / "ckpt"
  (ckpt / "source_assets").mkdir(parents=True)
  os.rename(json_path, ckpt / "source_assets" / "tokenizer.json")
  n_vocab = n + len(ws.openai_specials(99))
  (ckpt / "model_config.json").write_text(json.dumps({"text_decoder": {"vocab_size": n_vocab}}))
  assert get_whisper_tokenizer(str(ckpt)).vocab_size == n_vocab
  (ckpt / "model_config.json").write_text(json.dumps({"text_decoder": {"vocab_size": n_vocab + 1}}))
  with pytest.raises(VocabFileError, match=f"has {n_vocab} ids but the model {n_vocab + 1}"):
    get_whisper_tokenizer(str(ckpt))
  with pytest.raises(VocabFileError, match="cannot make a Whisper vocabulary of 51865 ids"):
    get_whisper_tokenizer(tiktoken_path, 51865)
  (tmp_path / "empty").mkdir()
  with pytest.raises(VocabFileError, match="no Whisper tokenizer"):
    get_whisper_tokenizer(str(tmp_path / "empty"))
  assert get_whisper_tokenizer(str(tmp_path / "v")).vocab_size == n_vocab  # a folder with a .tiktoken file
  tok = get_whisper_tokenizer(tiktoken_path)  # default: 99 languages
  with pytest.raises(SpecialTokenError, match="special token '<|en|>'"):
    tok.encode("hello <|en|> world")
  assert tok.encode("<|en|>", allow_special=True) == [tok.languages["en"]]
  with pytest.raises(SpecialTokenError, match="language 'xx'"):
    whisper_prompt(tok, "xx")
  with pytest.raises(SpecialTokenError, match="task must be one of"):
    whisper_prompt(tok, "en", "summarize")
  with pytest.raises(TokenizerError, match="outside the vocabulary"):
    tok.decode([tok.vocab_size])
  with pytest.raises(VocabFileError, match="not found"):
    get_whisper_tokenizer(str(tmp_path / "missing.tiktoken"))


@pytest.mark.skipif(not os.environ.get("QWEN_AUDIO_WHISPER_TIKTOKEN"), reason="set QWEN_AUDIO_WHISPER_TIKTOKEN")
def test_real_multilingual_vocabulary(tmp_path):
  from transformers.convert_slow_tokenizer import TikTokenConverter  # pylint: disable=import-outside-toplevel
  path = os.environ["QWEN_AUDIO_WHISPER_TIKTOKEN"]
  vocab, merges = TikTokenConverter(path).extract_vocab_merges_from_model(path)
  hf = transformers.WhisperTokenizer(vocab=vocab, merges=merges)
  hf.add_tokens([tokenizers.AddedToken(s, special=not ws.TIMESTAMP_RE.fullmatch(s), normalized=False)
                 for s in ws.openai_specials(99)])
  hf.save_pretrained(str(tmp_path))
  ours = [get_whisper_tokenizer(str(tmp_path / "tokenizer.json"), 51865), get_whisper_tokenizer(path, 51865)]
  _compare(hf, ours)
  assert ours[0].non_speech_tokens() == ours[1].non_speech_tokens()
  assert (ours[1].sot, ours[1].eot, ours[1].no_timestamps, ours[1].encode(" ")) == (50258, 50257, 50363, [220])
