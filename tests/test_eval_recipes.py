"""Metric recipes (qwen_audio_jax.eval.recipes) against hand-computed cases, independent re-implementations
of the official Qwen-Audio formulas, and the libraries (sacrebleu, jiwer, pycocoevalcap) called directly."""

import random
import re
import shutil

import jiwer
import pytest
import sacrebleu
from whisper_normalizer.basic import BasicTextNormalizer
from whisper_normalizer.english import EnglishTextNormalizer

from qwen_audio_jax.eval import recipes
from qwen_audio_jax.eval.recipes import RecipeDependencyError, RecipeError, UnknownRecipeError

NAMES = ["aac_cider@qwen-audio-v1", "aqa_acc@qwen-audio-v1", "asr_wer@qwen-audio-v1", "asr_wer@whisper-normalizer",
         "cls_acc@qwen-audio-v1", "mna@qwen-audio-v1", "s2tt_bleu@qwen-audio-v1", "srwt_aas@qwen-audio-v1"]
FIELDS = {"asr_wer@qwen-audio-v1": {"lang": "en"}, "asr_wer@whisper-normalizer": {"lang": "en"},
          "s2tt_bleu@qwen-audio-v1": {"tgt_lang": "de"}, "srwt_aas@qwen-audio-v1": {"lang": "zh"}}
WER_V1, WHISPER = recipes.get("asr_wer@qwen-audio-v1"), recipes.get("asr_wer@whisper-normalizer")
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="PTB tokenizer / METEOR need java on PATH")


# --- registry and bad input ----------------------------------------------------------------------

def test_registry_names_objects_and_unknown_name():
  assert recipes.list() == NAMES
  for name in NAMES:
    r = recipes.get(name)
    assert r.name == name and name == f"{r.metric}@{r.version}" and len(r.__doc__) > 200
  with pytest.raises(UnknownRecipeError) as e:
    recipes.get("asr_wer")
  assert "'asr_wer'" in str(e.value) and all(n in str(e.value) for n in NAMES) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_one_clear_error(name):
  r, fields = recipes.get(name), FIELDS.get(name, {})
  cases = [(["a", "b"], ["a"], "2 refs but 1 hyps"), ("ab", "ab", "refs must be a list"),
           ([], [], "no samples"), (["a"], [3], "hyps[0] is int")]
  for refs, hyps, message in cases:
    with pytest.raises(RecipeError, match=re.escape(message)) as e:
      r.score(refs, hyps, **fields)
    assert str(e.value).startswith(name) and "\n" not in str(e.value)
  with pytest.raises(RecipeError, match="unknown field.*bogus"):
    r.score(["a"], ["a"], bogus=1, **fields)
  with pytest.raises(RecipeError, match="field 'source' must be one scalar or 1 scalars"):
    r.score(["a"], ["a"], source=["x", "y"], **fields)


@pytest.mark.parametrize("name,refs,hyps", [
    ("asr_wer@qwen-audio-v1", ["a b"], ["a c"]), ("asr_wer@whisper-normalizer", ["a b"], ["a c"]),
    ("s2tt_bleu@qwen-audio-v1", ["a b c d"], ["a b c e"]), ("cls_acc@qwen-audio-v1", ["x"], ["x"]),
    ("aqa_acc@qwen-audio-v1", ["yes"], ["no"]),
    ("srwt_aas@qwen-audio-v1", ["<|0.00|>a<|1.00|>"], ["<|0.10|>a<|1.00|>"]),
    ("mna@qwen-audio-v1", ["<|pitch|><|midi_pitch_60|><|sonic|>dark"], ["<|pitch|><|midi_pitch_60|><|sonic|>dark"])])
def test_results_are_json_and_name_their_recipe(name, refs, hyps):
  import json
  summary, samples = recipes.get(name).evaluate(refs, hyps, source="s", **FIELDS.get(name, {}))
  assert json.loads(json.dumps(summary))["recipe"] == name == summary["impl"]["recipe"]
  assert summary[summary["headline"]] is not None and summary["per_source"]["s"]["n"] == 1
  assert json.loads(json.dumps(samples))[0]["source"] == "s" and "hyp_norm" in samples[0]


def test_language_fields_are_required_and_checked():
  with pytest.raises(RecipeError, match="needs lang= .* or dataset="):
    WER_V1.score(["a"], ["a"])
  with pytest.raises(RecipeError, match="unknown dataset 'librispeech_test'"):
    WER_V1.score(["a"], ["a"], dataset="librispeech_test")
  with pytest.raises(RecipeError, match="lang='en' contradicts dataset='aishell1'"):
    WER_V1.score(["a"], ["a"], dataset="aishell1", lang="en")
  with pytest.raises(RecipeError, match="needs lang="):
    WHISPER.score(["a"], ["a"])
  with pytest.raises(RecipeError, match="needs tgt_lang= or source="):
    recipes.get("s2tt_bleu@qwen-audio-v1").score(["a"], ["a"])
  with pytest.raises(RecipeError, match="fewer than 3"):
    recipes.get("s2tt_bleu@qwen-audio-v1").score(["a"], ["a"], source="covost2")
  with pytest.raises(RecipeError, match="empty after normalisation"):
    WER_V1.score(["<|en|> "], ["a"], lang="en")


# --- asr_wer@qwen-audio-v1 ---------------------------------------------------------------------

def test_asr_wer_v1_hand_cases():
  # 1: punctuation kept and re-attached: ["hello,", "world."] vs ["hello,world."] → 1 sub + 1 del.
  # 2: lower-cased: "The cat sat on" vs "the cat sat" → 1 insertion. Corpus 3/5 (sentence mean would be 2/3).
  s = WER_V1.score(["Hello, World.<|endoftext|>", "the cat sat"], ["hello ,world .", "The  cat\nsat on"], lang="en")
  assert (s["errors"], s["ref_length"], s["n"]) == (3, 5, 2) and s["wer"] == pytest.approx(0.6, abs=1e-15)
  assert s["recipe"] == "asr_wer@qwen-audio-v1" and s["headline"] == "wer" and "impl" in s
  # zh: characters, whitespace dropped, tags removed: 今天天气很好。 vs 今天天汽很好 → 1 sub + 1 del of 7.
  z = WER_V1.evaluate(["今天 天气 很好。"], ["<|zh|>今天天汽很好<|endoftext|>"], dataset="aishell1")
  assert z[0]["wer"] == pytest.approx(2 / 7, abs=1e-15)
  assert z[1][0]["ref_norm"] == "今天天气很好。" and z[1][0]["hyp_norm"] == "今天天汽很好"
  assert z[1][0]["errors"] == 2 and z[1][0]["ref_length"] == 7 and z[1][0]["lang"] == "zh"


def test_asr_wer_v1_per_source_and_per_sample():
  refs = ["a b c d", "a b", "x y z", "今天"]
  hyps = ["a b c", "a c", "x y z", "明天"]
  srcs = ["dev", "dev", "test", "zh_test"]
  s, samples = WER_V1.evaluate(refs, hyps, source=srcs, lang=["en", "en", "en", "zh"])
  assert s["per_source"]["dev"] == {"n": 2, "wer": 2 / 6, "errors": 2, "ref_length": 6}
  assert s["per_source"]["test"]["wer"] == 0.0 and s["per_source"]["zh_test"]["wer"] == 0.5
  assert s["wer"] == 3 / 11 and list(s["per_source"]) == ["dev", "test", "zh_test"]
  assert [x["errors"] for x in samples] == [1, 1, 0, 1] and [x["source"] for x in samples] == srcs
  assert WER_V1.per_sample(refs, hyps, source=srcs, lang=["en", "en", "en", "zh"]) == samples


def _official_remove_sp(text, lang):
  """evaluate_asr.py remove_sp, written out from the script for this test."""
  text = re.sub(r"<\|.*?\|>", " ", text)
  text = re.sub(r"\s+", " ", text)
  text = re.sub(r" ?([!,.?;:])", r"\1", text).lstrip(" ")
  return re.sub(r"\s+", "", text) if lang == "zh" else text


def _levenshtein(a, b):
  row = list(range(len(b) + 1))
  for i, x in enumerate(a, 1):
    prev, row[0] = row[0], i
    for j, y in enumerate(b, 1):
      prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
  return row[-1]


def _official_wer(refs, hyps, lang):
  dist = length = 0
  for ref, hyp in zip(refs, hyps):
    r, h = _official_remove_sp(ref, lang).lower().split(), _official_remove_sp(hyp, lang).lower().split()
    if lang == "zh":
      r, h = list("".join(r)), list("".join(h))
    dist, length = dist + _levenshtein(r, h), length + len(r)
  return dist / length


def _random_text(rng, lang):
  if lang == "zh":
    pieces = [rng.choice("今天天气很好我们去公园吧，。？！ ") for _ in range(rng.randint(1, 12))]
  else:
    words = ["The", "the", "cat", "Cat", "sat", "on", "mat", "a", "A", "dog", "ran"]
    pieces = [rng.choice(words) + rng.choice(["", "", ",", ".", " ,", " ?", "!"]) for _ in range(rng.randint(1, 9))]
  text = rng.choice([" ", "  ", "\t"]).join(pieces)
  if rng.random() < 0.4:
    text = rng.choice(["<|en|>", "<|zh|>", "<|endoftext|>", " <|notimestamps|> "]) + text
  return text + rng.choice(["", " ", "<|endoftext|>"])


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_asr_wer_v1_matches_official_formula_on_random_pairs(lang):
  rng = random.Random(1234 + len(lang))
  refs = [_random_text(rng, lang) for _ in range(200)]
  hyps = [_random_text(rng, lang) if rng.random() < 0.7 else refs[i].upper() for i in range(200)]
  srcs = [rng.choice(["s1", "s2", "s3"]) for _ in range(200)]
  s = WER_V1.score(refs, hyps, lang=lang, source=srcs)
  assert s["wer"] == pytest.approx(_official_wer(refs, hyps, lang), rel=1e-12)
  for src, part in s["per_source"].items():
    idx = [i for i in range(200) if srcs[i] == src]
    assert part["wer"] == pytest.approx(_official_wer([refs[i] for i in idx], [hyps[i] for i in idx], lang), rel=1e-12)


# --- asr_wer@whisper-normalizer ------------------------------------------------------------------

def test_whisper_recipe_normalises_and_never_mixes_with_v1():
  refs = ["Mr. Smith paid $10.", "I'm colour-blind, OK?"]
  hyps = ["<|en|>mister smith paid<|notimestamps|>ten dollars", "i am color blind"]  # a tag is a word boundary
  s, samples = WHISPER.evaluate(refs, hyps, lang="en")
  assert samples[0]["ref_norm"] == samples[0]["hyp_norm"] == "mister smith paid $10"
  assert samples[1]["ref_norm"] == "i am color blind ok" and samples[1]["errors"] == 1
  assert (s["errors"], s["ref_length"], s["deletions"]) == (1, 9, 1) and s["wer"] == 1 / 9
  assert WER_V1.score(refs, hyps, lang="en")["wer"] > 0.5  # the v1 recipe keeps case, punctuation, numbers
  zh = WHISPER.score(["今天，天气好"], ["今天天气很好"], lang="zh")  # basic normaliser, then characters
  assert (zh["errors"], zh["ref_length"], zh["insertions"]) == (1, 5, 1)


def test_whisper_recipe_equals_jiwer_after_the_normaliser():
  rng = random.Random(7)
  refs = [_random_text(rng, "en") for _ in range(100)]
  hyps = [_random_text(rng, "en") for _ in range(100)]
  tag = re.compile(r"<\|.*?\|>")
  english = EnglishTextNormalizer()
  norm = [" ".join(english(tag.sub(" ", x)).split()) for x in refs], [" ".join(english(tag.sub(" ", x)).split())
                                                                       for x in hyps]
  assert WHISPER.score(refs, hyps, lang="en")["wer"] == pytest.approx(jiwer.wer(*norm), rel=1e-12)
  basic = BasicTextNormalizer()
  norm = [" ".join(basic(tag.sub(" ", x)).split()) for x in refs], [" ".join(basic(tag.sub(" ", x)).split())
                                                                     for x in hyps]
  assert WHISPER.score(refs, hyps, lang="fr")["wer"] == pytest.approx(jiwer.wer(*norm), rel=1e-12)


def test_whisper_normalizer_package_is_openai_code_as_transformers_ships_it():
  import json
  from importlib.resources import files

  from transformers.models.whisper.english_normalizer import EnglishTextNormalizer as HFEnglish
  mapping = json.loads(files("whisper_normalizer").joinpath("normalizers/english.json").read_text())
  hf, ours = HFEnglish(mapping), EnglishTextNormalizer()
  for text in ["Mr. Smith paid $10.", "I'm colour-blind, uh, OK?", "It's 3:45 p.m., twenty-one people [noise]",
               "Dr. O'Neil won't go to St. Mary's, mm.", "one hundred and five point two percent"]:
    assert ours(text) == hf(text)


# --- s2tt_bleu@qwen-audio-v1 ---------------------------------------------------------------------

BLEU = recipes.get("s2tt_bleu@qwen-audio-v1")
ST = {
    "covost2_en_de_test": (["Das Haus ist klein.", "Ich gehe heute nach Hause.", "Er hat einen Hund."],
                           ["Das Haus ist klein .", "Heute gehe ich nach Hause.", "Er hat eine Katze."]),
    "covost2_en_zh_test": (["我今天去公园散步。", "这本书很有意思。", "他有一只狗。"],
                           ["我今天去公园走路。", "这本书非常有意思。", "他有一条狗。"]),
    "covost2_en_ja_test": (["私は今日公園に行きました。", "この本はとても面白いです。", "彼は犬を飼っています。"],
                           ["私は今日公園へ行った。", "この本は面白いです。", "彼は猫を飼っています。"]),
}


def test_bleu_equals_sacrebleu_with_the_right_tokenizer_per_source():
  refs = [r for src in ST for r in ST[src][0]]
  hyps = [h + " " for src in ST for h in ST[src][1]]  # stripped by the recipe (the script strips at decode)
  srcs = [src for src in ST for _ in ST[src][0]]
  s = BLEU.score(refs, hyps, source=srcs)
  assert s["bleu"] is None and s["tokenizers"] == ["13a", "ja-mecab", "zh"]
  for src, tok in [("covost2_en_de_test", "13a"), ("covost2_en_zh_test", "zh"), ("covost2_en_ja_test", "ja-mecab")]:
    want = sacrebleu.corpus_bleu(ST[src][1], [ST[src][0]], tokenize=tok)
    part = s["per_source"][src]
    assert part["bleu"] == pytest.approx(want.score, rel=1e-12) and part["tokenize"] == tok
    assert f"tok:{tok}" in part["signature"] and "version:" in part["signature"] and part["n"] == 3
    assert part["counts"] == list(want.counts) and part["sys_len"] == want.sys_len
    other = sacrebleu.corpus_bleu(ST[src][1], [ST[src][0]], tokenize="char" if tok == "13a" else "13a")
    assert abs(other.score - want.score) > 1  # the tokenizer matters on these inputs
  one = BLEU.score(ST["covost2_en_zh_test"][0], ST["covost2_en_zh_test"][1], tgt_lang="zh")
  assert one["bleu"] == s["per_source"]["covost2_en_zh_test"]["bleu"]
  assert BLEU.score(["Das ist gut."], ["Das ist gut."], tgt_lang="de")["bleu"] == pytest.approx(100.0)


def test_bleu_ja_without_mecab_is_a_clear_error_only_for_ja(monkeypatch):
  from qwen_audio_jax.eval.recipes import s2tt_bleu_v1
  from sacrebleu.tokenizers import tokenizer_ja_mecab
  monkeypatch.setattr(tokenizer_ja_mecab, "MeCab", None)
  s2tt_bleu_v1.bleu_metric.cache_clear()
  try:
    with pytest.raises(RecipeDependencyError, match="'ja-mecab' is unavailable.*mecab-python3 and ipadic"):
      BLEU.score(["今日は"], ["今日は"], tgt_lang="ja")
    assert BLEU.score(["a b c d"], ["a b c d"], tgt_lang="de")["bleu"] == pytest.approx(100.0)
  finally:
    s2tt_bleu_v1.bleu_metric.cache_clear()


# --- cls_acc, aqa_acc ----------------------------------------------------------------------------

def test_cls_acc_exact_match_of_stripped_output():
  s, samples = recipes.get("cls_acc@qwen-audio-v1").evaluate(
      ["Happy", "sad", "neutral", "bus"], [" Happy\n", "Sad", "neutral<|endoftext|>", "bus"],
      source=["meld"] * 3 + ["x"])
  assert s["acc"] == 0.5 and s["correct"] == 2 and s["per_source"]["meld"]["acc"] == pytest.approx(1 / 3)
  assert [x["correct"] for x in samples] == [True, False, False, True]


def test_aqa_acc_and_binary_acc():
  s, samples = recipes.get("aqa_acc@qwen-audio-v1").evaluate(["yes", "No", "a dog", "no", "three"],
                                                              ["yes", "no", "a dog", "no ", "3"])
  assert s["acc"] == 3 / 5 and s["n_binary"] == 3 and s["binary_acc"] == pytest.approx(2 / 3)
  assert s["binary_correct"] == 2 and [x["correct"] for x in samples] == [True, False, True, True, False]
  assert [x["binary"] for x in samples] == [True, True, False, True, False]
  none = recipes.get("aqa_acc@qwen-audio-v1").score(["a dog"], ["a dog"])
  assert none["binary_acc"] is None and none["n_binary"] == 0


# --- mna@qwen-audio-v1 ---------------------------------------------------------------------------

def _note(pitch, velocity, instrument, sonic):
  text = f"<|pitch|><|midi_pitch_{pitch}|>" if pitch is not None else ""
  text += f"<|velocity|><|midi_velocity_{velocity}|>" if velocity is not None else ""
  return text + (f"<|instrument|>{instrument}" if instrument else "") + f"<|sonic|>{sonic}"


def test_mna_hand_case():
  refs = [_note(60, 100, "keyboard_acoustic", "bright"), _note(62, 80, "bass_electronic", "bright, dark"),
          _note(64, 127, "guitar_acoustic", ""), _note(72, 25, "organ_electronic", "dark")]
  hyps = [_note(60, 100, "keyboard_acoustic", "bright"), _note(74, 80, "bass_synthetic", "dark, loud"),
          _note(64, 50, "guitar_acoustic", "bright, reverb"), "<|sonic|>reverb"]
  s, samples = recipes.get("mna@qwen-audio-v1").evaluate(refs, hyps)
  assert s["instrument_acc"] == 0.5 and s["velocity_acc"] == 0.5 and s["pitch_acc"] == 0.5
  # columns bright, dark, reverb ('loud' is not an NSynth quality): AP 0.5, 0.75 and 0 (reverb has no
  # positive); macro 1.25 / 3 (micro would be 0.3667, all 10 labels 0.125).
  assert s["quality_labels"] == ["bright", "dark", "reverb"] and s["labels_without_positives"] == ["reverb"]
  assert s["qualities_map"] == pytest.approx(1.25 / 3, abs=1e-12)
  # the script's chroma: index among distinct pitches [60, 62, 64, 72, 74, 128] mod 12; MIDI chroma would give
  # 0.75 (62 and 74 are both D).
  assert s["pitch_chroma_acc"] == 0.5
  assert samples[3]["hyp_norm"] == {"pitch": 128, "velocity": 128, "instrument": "", "sonic": ["reverb"]}
  assert samples[3]["missing_in_hyp"] == ["pitch", "velocity", "instrument"]


# --- srwt_aas@qwen-audio-v1 ----------------------------------------------------------------------

SRWT = recipes.get("srwt_aas@qwen-audio-v1")


def test_srwt_aas_hand_case():
  refs = ["<|0.00|><|sil|><|0.54|>面<|0.86|>条<|1.17|>机<|1.46|><|sil|><|2.01|>", "<|0.00|>好<|0.50|>的<|1.00|>",
          "<|0.00|>你<|0.30|>"]
  # hyps are continuations after the forced <|0.00|>: their first word has no start and is dropped
  hyps = ["<|sil|><|0.50|>面<|0.90|>条<|1.17|>鸡<|1.40|><|sil|><|2.00|>", "好<|0.40|>的<|1.20|>", "你"]
  s, samples = SRWT.evaluate(refs, hyps, dataset="industrial_srwt")
  # matched 面 (.04+.04), 条 (.04), <|sil|> (.06+.01) | 的 (.1+.2); the 3rd pair has no hyp time token
  assert s["aas"] == pytest.approx(0.49 / 4, abs=1e-12) and s["matched_words"] == 4 and s["pattern_errors"] == 1
  assert s["max_shift"] == pytest.approx(0.3, abs=1e-12) and s["max_shift_index"] == 1
  assert s["wer"] == 1 / 6 and samples[0]["hyp_norm"] == "面条鸡" and samples[2]["pattern_error"]
  # ties: [a, b, a] vs [a] → edit_distance's backtrace matches the LAST a (difflib would take the first)
  tie = SRWT.score(["<|0.00|>a<|1.00|>b<|2.00|>a<|3.00|>"], ["x<|0.00|>a<|0.50|>"], lang="en")
  assert tie["aas"] == pytest.approx(4.5, abs=1e-12) and tie["matched_words"] == 1
  # consecutive time tokens hold an empty word, matched like any other (the script's re.split keeps '')
  gap = SRWT.score(["<|0.00|>a<|1.00|><|1.20|>b<|2.00|>"], ["x<|0.00|>a<|1.00|><|1.30|>b<|2.00|>"], lang="en")
  assert gap["aas"] == pytest.approx(0.2 / 3, abs=1e-12) and gap["matched_words"] == 3


def _official_aas(refs, hyps):
  """evaluate_srwt.py AverageShiftCalculator (read_timestamps + as_cal), written out for this test."""
  import edit_distance
  pattern = r"<\|\d{1,2}\.\d+\|>"

  def read(body):
    times = [float(t[2:-2]) for t in re.findall(pattern, body)]
    words = re.split(pattern, body)[1:-1]
    return "\t".join(words), [times[i:i + 2] for i in range(len(times) - 1)]

  shift = tokens = 0
  for (t1, ts1), (t2, ts2) in zip(map(read, refs), map(read, hyps)):
    align_hyp, align_ref = [], []
    for op in edit_distance.SequenceMatcher(t1.split("\t"), t2.split("\t")).get_opcodes():
      if op[0] in ("replace", "insert"):
        align_hyp.append(0)
      if op[0] in ("replace", "delete"):
        align_ref.append(0)
      elif op[0] == "equal":
        align_hyp.append(1)
        align_ref.append(1)
    f2 = [ts for a, ts in zip(align_hyp, ts2) if a]
    f1 = [ts for a, ts in zip(align_ref, ts1) if a]
    if len(f1) == len(f2):  # else "length mismatch": a one-time-token text's phantom '' word matched; skipped
      shift += sum(abs(a[0] - b[0]) + abs(a[1] - b[1]) for a, b in zip(f1, f2))
      tokens += len(f1)
  return shift / tokens


def test_srwt_aas_matches_official_calculator_on_random_utterances():
  rng = random.Random(99)

  def utterance(words, jitter):
    t, text = 0, "<|0.00|>"
    for w in words:
      t += rng.randint(1, 60) + (rng.randint(-5, 5) if jitter else 0)
      text += f"{w}<|{max(t, 0) / 100:.2f}|>"
    return text

  refs, hyps = [], []
  for _ in range(200):
    words = [rng.choice(["面", "条", "机", "<|sil|>", "好", "的", ""]) for _ in range(rng.randint(1, 10))]
    hyp_words = [w for w in words if rng.random() > 0.2]
    hyp_words += [rng.choice(["面", "鸡"]) for _ in range(rng.randint(0, 2))]
    if rng.random() < 0.2:
      rng.shuffle(hyp_words)
    refs.append(utterance(words, False))
    hyps.append(utterance(hyp_words or ["面"], True)[len("<|0.00|>"):])  # continuation after the forced 0.00
  assert SRWT.score(refs, hyps, lang="zh")["aas"] == pytest.approx(_official_aas(refs, hyps), rel=1e-12)


# --- aac_cider@qwen-audio-v1 ---------------------------------------------------------------------

CLOTHO = [  # (5 references, hypothesis) per clip
    (["A dog barks loudly, twice.", "The dog's barking echoes!", "A dog is barking outside.",
      "Somebody's dog barks -- twice.", "A DOG BARKS AT NIGHT."], "A dog is barking loudly."),
    (["Rain falls on a tin roof.", "Heavy rain on a roof!", "Rain is falling steadily.",
      "Rain drums on the metal roof.", "It rains (heavily) on a roof."], "rain falls on the roof"),
    (["Birds are chirping in the trees.", "A bird sings; another answers.", "Several birds chirp.",
      "Birds chirping at dawn.", "Small birds are singing loudly."], "birds chirp in the morning ."),
]


@pytest.fixture(scope="module")
def meteor():
  from pycocoevalcap.meteor.meteor import Meteor
  return Meteor()  # the library's scorer; loading its tables takes ~10 s, so the recipe run shares it


@pytest.fixture(scope="module")
def cider_run(meteor):
  refs = [["a b"], ["c d"]] + [c[0] for c in CLOTHO]
  hyps = ["a b", "x y"] + [c[1] for c in CLOTHO]
  recipe = recipes.get("aac_cider@qwen-audio-v1")
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(type(recipe), "_meteor_scorer", lambda self: meteor)
    return recipe.evaluate(refs, hyps, source=["hand"] * 2 + ["clotho"] * 3)


@needs_java
def test_cider_hand_checkable_case(cider_run):
  # clip 1: 1- and 2-gram cosine 1, no 3/4-grams → mean 0.5 × 10 = 5; clip 2 shares nothing → 0
  hand = cider_run[0]["per_source"]["hand"]
  assert hand["CIDEr"] == pytest.approx(2.5, abs=1e-12) and [s["CIDEr"] for s in cider_run[1][:2]] == [5.0, 0.0]
  assert hand["computed"] == ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"]
  assert set(hand["not_computed"]) == {"SPICE", "SPIDEr"} and "SPICE" not in hand


@needs_java
def test_caption_metrics_equal_the_library_scorers(cider_run, meteor):
  from pycocoevalcap.bleu.bleu import Bleu
  from pycocoevalcap.cider.cider import Cider
  from pycocoevalcap.rouge.rouge import Rouge
  from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
  tok = PTBTokenizer()  # the library's own wrapper
  gts = tok.tokenize({i: [{"caption": r} for r in refs] for i, (refs, _) in enumerate(CLOTHO)})
  res = tok.tokenize({i: [{"caption": hyp}] for i, (_, hyp) in enumerate(CLOTHO)})
  got = cider_run[0]["per_source"]["clotho"]
  assert [s["ref_tokens"] for s in cider_run[1][2:]] == [gts[i] for i in range(3)]
  assert got["CIDEr"] == pytest.approx(Cider().compute_score(gts, res)[0], rel=1e-12)
  assert got["ROUGE_L"] == pytest.approx(Rouge().compute_score(gts, res)[0], rel=1e-12)
  assert got["METEOR"] == pytest.approx(meteor.compute_score(gts, res)[0], rel=1e-12)
  bleu = Bleu(4).compute_score(gts, res, verbose=0)[0]
  assert [got[f"Bleu_{n}"] for n in range(1, 5)] == pytest.approx(bleu, rel=1e-12)
  raw = {i: [" ".join(r.lower().split()) for r in refs] for i, (refs, _) in enumerate(CLOTHO)}
  assert abs(Cider().compute_score(raw, {i: [h.lower()] for i, (_, h) in enumerate(CLOTHO)})[0] - got["CIDEr"]) > 0.05


def test_caption_recipe_without_java_is_a_clear_error(monkeypatch):
  from qwen_audio_jax.eval.recipes import ptb
  monkeypatch.setattr(ptb.shutil, "which", lambda name: None)
  with pytest.raises(RecipeDependencyError, match="needs `java` on PATH"):
    recipes.get("aac_cider@qwen-audio-v1").score([["a b"]], ["a b"])
  with pytest.raises(RecipeError, match="1 refs but 2 hyps"):  # bad input first, then tools
    recipes.get("aac_cider@qwen-audio-v1").score([["a b"]], ["a b", "c"])


@needs_java
def test_caption_recipe_starts_one_meteor_per_call():
  recipe = recipes.get("aac_cider@qwen-audio-v1")
  first = recipe._meteor_scorer()
  try:
    assert type(first).__module__ == "pycocoevalcap.meteor.meteor" and recipe._meteor_scorer() is first
  finally:
    recipe._meteor = None  # what evaluate() does when it ends; Meteor.__del__ stops the java process
