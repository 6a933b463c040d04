"""Chat SFT: ids and loss mask of a 3-turn, 2-audio conversation against the references, token for token;
the conversations jsonl shapes; and a mixed audio + text-only SFT batch that trains.

References written here, independently of the package:
* Qwen-Audio-Chat: `qwen_generation_utils.make_context` (ids of the context) and Qwen's `finetune.py`
  `preprocess` (ids and labels of the whole conversation), re-implemented from the reference code on a
  tiktoken Encoding built here, with `tokenization_qwen.py`'s `<audio>` span replacement.
* Qwen2-Audio: transformers' `Qwen2AudioProcessor` itself, built offline (no hub files): its default chat
  template renders the text and its `__call__` expands `<|AUDIO|>` from real waveforms; the tokenizer is
  transformers' `Qwen2Tokenizer` made from the project's qwen.tiktoken (vocab + merges). Its template has no
  generation markers, so the loss regions come from the rendered text and the tokenizer's offsets.
"""

import base64
import json

import numpy as np
import pytest

from qwen_audio_jax.audio import lengths
from qwen_audio_jax.prompts.conversation import build_chat_example
from qwen_audio_jax.tokenizer import default_vocab_path, get_tokenizer

IGNORE = -100
SYSTEM = "You are a helpful assistant."
A1, A2 = "clips/first.flac", "clips/second.wav"
# (user content, assistant answer) per turn; audio k of the conversation is labelled `Audio k:`.
TURNS = [([("audio", A1), ("text", "what does the person say?")],
          'The person says: "ask not what your country can do for you".'),
         ([("text", "Find the start time of the word \"country\".")],
          "The word \"country\" starts at <|2.33|> seconds."),
         ([("audio", A2), ("text", "Is the second clip the same speaker?\nAnswer briefly.")], "No, it is music.")]
SECONDS = {A1: 11.0, A2: 3.3}


def messages_of(turns):
  msgs = []
  for user, answer in turns:
    content = [{"type": "audio", "audio": v} if k == "audio" else {"type": "text", "text": v} for k, v in user]
    msgs.append({"role": "user", "content": content})
    msgs.append({"role": "assistant", "content": answer})
  return msgs


def audio_counts():
  return [int(lengths.audio_tokens(int(SECONDS[p] * 16000))) for p in (A1, A2)]


# ------------------------------------------------------------------ Qwen-Audio-Chat reference
@pytest.fixture(scope="module")
def v1_encoding():
  import tiktoken
  tok = get_tokenizer("qwen-audio")
  with open(default_vocab_path(), "rb") as f:
    ranks = {base64.b64decode(t): int(r) for t, r in (line.split() for line in f.read().splitlines() if line)}
  pat = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
         r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
  enc = tiktoken.Encoding("qwen_audio_ref", pat_str=pat, mergeable_ranks=ranks, special_tokens=dict(tok.special_tokens))
  audio_st = {t for t, i in tok.special_tokens.items() if i >= 151851}  # tokenization_qwen.py AUDIO_ST
  return enc, audio_st, tok.special_tokens


def ref_v1_encode(ref, text, spans):
  """tokenizer.encode(text, allowed_special=AUDIO_ST, audio_info=...): tiktoken, then every <audio>...</audio>
  token range replaced by ['<audio>'] + [pad] * (span - 2) + ['</audio>'] (`_replace_closed_tag`)."""
  enc, audio_st, sp = ref
  ids, out, k, i = enc.encode(text, allowed_special=audio_st), [], 0, 0
  while i < len(ids):
    if ids[i] == sp["<audio>"]:
      j = ids.index(sp["</audio>"], i)
      out += [sp["<audio>"]] + [sp["[[[AUDIO:modality]]]"]] * (spans.pop(0) - 2) + [sp["</audio>"]]
      i, k = j + 1, k + 1
    else:
      out.append(ids[i])
      i += 1
  return out


def ref_make_context(ref, query, history, system, spans):
  """qwen_generation_utils.make_context (chatml, window large enough), audio spans in conversation order."""
  enc, _, sp = ref
  im_start, im_end, nl = [sp["<|im_start|>"]], [sp["<|im_end|>"]], enc.encode("\n")

  def tokenize_str(role, content):
    n = content.count("<audio>")
    mine, spans[:] = spans[:n], spans[n:]
    return ref_v1_encode(ref, role, []) + nl + ref_v1_encode(ref, content, mine)

  system_tokens = im_start + tokenize_str("system", system) + im_end
  context = []
  for q, r in history:  # oldest first here (the reference walks reversed and prepends: same result)
    context += nl + im_start + tokenize_str("user", q) + im_end + nl + im_start + tokenize_str("assistant", r) + im_end
  return (system_tokens + context + nl + im_start + tokenize_str("user", query) + im_end + nl + im_start
          + enc.encode("assistant") + nl)


def ref_finetune(ref, conversation, system, spans):
  """Qwen finetune.py `preprocess` for one source: (input_id, target) with IGNORE_TOKEN_ID = -100."""
  enc, _, sp = ref
  im_start, im_end = sp["<|im_start|>"], sp["<|im_end|>"]
  nl = enc.encode("\n")
  tok_all = lambda text: enc.encode(text, allowed_special="all")  # tokenizer(x).input_ids
  roles = {"user": "<|im_start|>user", "assistant": "<|im_start|>assistant"}
  system_ids = [im_start] + tok_all("system") + nl + tok_all(system) + [im_end] + nl
  input_id, target = list(system_ids), [im_start] + [IGNORE] * (len(system_ids) - 3) + [im_end] + nl
  for sentence in conversation:
    role = roles[sentence["from"]]
    n = sentence["value"].count("<audio>")
    mine, spans[:] = spans[:n], spans[n:]
    _input_id = tok_all(role) + nl + ref_v1_encode(ref, sentence["value"], mine) + [im_end] + nl
    input_id += _input_id
    if role == "<|im_start|>user":
      _target = [im_start] + [IGNORE] * (len(_input_id) - 3) + [im_end] + nl
    else:
      _target = [im_start] + [IGNORE] * len(tok_all(role)) + _input_id[len(tok_all(role)) + 1:-2] + [im_end] + nl
    target += _target
  return input_id, target


def v1_text(user):
  """The user turn as Qwen-Audio-Chat text (web demo / sft_sample spelling), numbering audios globally."""
  text = ""
  for kind, value in user:
    text += f"Audio {[A1, A2].index(value) + 1}: <audio>{value}</audio>\n" if kind == "audio" else value
  return text


def test_qwen_audio_chat_ids_and_mask_match_make_context_and_finetune(v1_encoding):
  tok = get_tokenizer("qwen-audio")
  n = audio_counts()
  spans = [c + 2 for c in n]
  ours = build_chat_example(tok, messages_of(TURNS), n, loss_on="qwen_finetune")
  conv = [s for user, answer in TURNS for s in ({"from": "user", "value": v1_text(user)},
                                                 {"from": "assistant", "value": answer})]
  ref_ids, ref_target = ref_finetune(v1_encoding, conv, SYSTEM, list(spans))
  assert ours.ids.tolist() == ref_ids
  np.testing.assert_array_equal(ours.loss_mask, np.asarray(ref_target) != IGNORE)
  # make_context for the last query + the last answer + <|im_end|>\n is the same sequence (inference layout)
  history = [(v1_text(u), a) for u, a in TURNS[:-1]]
  context = ref_make_context(v1_encoding, v1_text(TURNS[-1][0]), history, SYSTEM, list(spans))
  enc, _, sp = v1_encoding
  tail = enc.encode(TURNS[-1][1], allowed_special={"<|2.33|>"}) + [sp["<|im_end|>"]] + enc.encode("\n")
  assert ours.ids.tolist() == context + tail
  # default loss: the same targets without the turn boundaries (every <|im_start|>, system/user <|im_end|>\n)
  assistant = build_chat_example(tok, messages_of(TURNS), n)
  assert assistant.ids.tolist() == ref_ids
  in_answer, inside = np.zeros(len(ref_ids), bool), False
  for i, t in enumerate(ref_ids):
    if t == sp["<|im_start|>"]:
      inside = ref_ids[i + 1] == enc.encode("assistant")[0]
      start = i + 3  # content after "<|im_start|>assistant\n"
    if inside and i >= start:
      in_answer[i] = True
  np.testing.assert_array_equal(assistant.loss_mask, (np.asarray(ref_target) != IGNORE) & in_answer)
  answer_ids = ours.ids[assistant.loss_mask == 1].tolist()
  assert answer_ids.count(sp["<|im_end|>"]) == 3 and sp["<|2.33|>"] in answer_ids  # timestamp parsed
  assert int(np.sum(ours.ids == sp["[[[AUDIO:modality]]]"])) == sum(n)


# ------------------------------------------------------------------ Qwen2-Audio reference (transformers)
@pytest.fixture(scope="module")
def hf_processor():
  from transformers import Qwen2AudioProcessor, Qwen2Tokenizer, WhisperFeatureExtractor
  from transformers.convert_slow_tokenizer import TikTokenConverter
  vocab, merges = TikTokenConverter(vocab_file=default_vocab_path()).extract_vocab_merges_from_model(
      default_vocab_path())
  hf_tok = Qwen2Tokenizer(vocab=vocab, merges=merges)  # adds <|endoftext|> as 151643
  hf_tok.add_special_tokens({"additional_special_tokens": [
      "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]})
  return Qwen2AudioProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=hf_tok)


def _hf_messages(turns):
  out = []
  for user, answer in turns:
    content = [{"type": "audio", "audio_url": v} if k == "audio" else {"type": "text", "text": v} for k, v in user]
    out.append({"role": "user", "content": content})
    out.append({"role": "assistant", "content": answer})
  return out


def test_qwen2_audio_ids_and_mask_match_hf_processor(hf_processor):
  rng = np.random.default_rng(0)
  waves = [0.1 * rng.standard_normal(int(SECONDS[p] * 16000)).astype(np.float32) for p in (A1, A2)]
  text = hf_processor.apply_chat_template(_hf_messages(TURNS), tokenize=False, add_generation_prompt=False)
  hf = hf_processor(text=text, audio=waves, sampling_rate=16000, return_tensors="np")
  hf_ids = hf["input_ids"][0].tolist()
  # loss regions from the rendered text: each assistant content through its "<|im_end|>\n"
  regions, pos, head = [], 0, "<|im_start|>assistant\n"
  while (start := text.find(head, pos)) >= 0:
    end = text.index("<|im_end|>\n", start) + len("<|im_end|>\n")
    regions.append((start + len(head), end))
    pos = end
  assert len(regions) == 3
  plain = hf_processor.tokenizer(text, return_offsets_mapping=True)
  audio_id = hf_processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
  counts = [len(run) for run in "".join("a" if t == audio_id else " " for t in hf_ids).split()]
  want_ids, want_mask, runs = [], [], iter(counts)
  for t, (a, b) in zip(plain["input_ids"], plain["offset_mapping"]):
    inside = any(lo <= a and b <= hi for lo, hi in regions)
    reps = next(runs) if t == audio_id else 1
    want_ids += [t] * reps
    want_mask += [int(inside)] * reps
  assert want_ids == hf_ids  # the offsets walk reproduces the processor's expansion
  ours = build_chat_example(get_tokenizer("qwen2-audio"), messages_of(TURNS), counts)
  assert counts == audio_counts()  # our token arithmetic agrees with the feature extractor's mask
  assert ours.ids.tolist() == hf_ids
  assert ours.loss_mask.tolist() == want_mask
  assert sum(want_mask) > 20 and hf_ids.count(151645) == 7  # system + 6 turns end with <|im_end|>


def test_loss_mask_mutations_are_caught():
  """The comparisons above can fail: a mask without the closing <|im_end|>, or one that also trains the user
  turns, differs from the default."""
  tok = get_tokenizer("qwen2-audio")
  base = build_chat_example(tok, messages_of(TURNS), audio_counts())
  ends = np.flatnonzero(base.ids == tok.im_end_id)
  assert base.loss_mask[ends].tolist() == [0, 0, 1, 0, 1, 0, 1]  # system, user, assistant, ...
  finetune = build_chat_example(tok, messages_of(TURNS), audio_counts(), loss_on="qwen_finetune")
  assert (finetune.loss_mask >= base.loss_mask).all() and finetune.loss_mask.sum() == base.loss_mask.sum() + 7 + 4 * 2


# ------------------------------------------------------------------ conversations jsonl and training
def _write_tone(path, seconds, freq):
  import soundfile
  t = np.arange(int(seconds * 16000)) / 16000
  soundfile.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000)


def test_conversation_jsonl_shapes_are_detected_per_line(tmp_path):
  from qwen_audio_jax.data import ManifestError
  from qwen_audio_jax.data.conversations import read_conversations_jsonl
  chatml = ("<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\nAudio 1: "
            "<audio>a.flac</audio>\\nwhat does the person say?<|im_end|>\\n<|im_start|>assistant\\nHello there."
            "<|im_end|>\\n<|im_start|>user\\nAnd this one?<|im_end|>\\n<|im_start|>assistant\\nSilence.")
  swift = {"messages": [{"role": "user", "content": "<audio>what does the person say?"},
                        {"role": "assistant", "content": "Hello there."},
                        {"role": "user", "content": "And this one?"}, {"role": "assistant", "content": "Silence."}],
           "audios": ["a.flac"], "id": "s1"}
  factory = {"conversations": [{"from": "human", "value": "<audio>what does the person say?"},
                               {"from": "gpt", "value": "Hello there."}, {"from": "human", "value": "And this one?"},
                               {"from": "gpt", "value": "Silence."}], "audios": ["a.flac"],
             "system": "You are a helpful assistant."}
  text_only = {"messages": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}]}
  path = tmp_path / "conv.jsonl"
  path.write_text("\n".join([chatml, json.dumps(swift), "", json.dumps(factory), json.dumps(text_only)]) + "\n")
  records = read_conversations_jsonl(path)
  assert [r["id"] for r in records] == ["1", "s1", "4", "5"] and [r["n_audios"] for r in records] == [1, 1, 1, 0]
  audio = {"type": "audio", "audio": str(tmp_path / "a.flac")}
  user1 = [audio, {"type": "text", "text": "what does the person say?"}]
  assert records[0]["messages"][1]["content"] == records[1]["messages"][0]["content"] == user1
  tok = get_tokenizer("qwen-audio")
  built = [build_chat_example(tok, r["messages"], [5]).ids.tolist() for r in records[:3]]
  assert built[0] == built[1] == built[2]  # default system added where absent: one conversation, three shapes
  assert records[3]["messages"][0]["content"] == [{"type": "text", "text": "Name a colour."}]
  bad = {"count": json.dumps(dict(swift, audios=[])),
         "role": json.dumps({"messages": [{"role": "bot", "content": "x"}]}),
         "json": "{not json", "answer": json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
         "shape": "plain text line"}
  for case, line in bad.items():
    (tmp_path / f"{case}.jsonl").write_text(line + "\n")
    with pytest.raises(ManifestError, match=rf"{case}.jsonl:1: "):
      read_conversations_jsonl(tmp_path / f"{case}.jsonl")


def test_mixed_audio_and_text_only_sft_batch_trains(tmp_path):
  import jax
  from qwen_audio_jax.data import make_train_iterator
  from qwen_audio_jax.sharding import mesh as mesh_lib, partition
  from qwen_audio_jax.train import defaults, loop, model_fns, optimizer, state as state_lib, step as step_lib
  _write_tone(tmp_path / "a.wav", 2.0, 440)
  _write_tone(tmp_path / "b.wav", 1.2, 880)
  with_audio = [{"messages": [{"role": "user", "content": "<audio>What pitch?"},
                              {"role": "assistant", "content": "A4."},
                              {"role": "user", "content": "<audio>And now?"}, {"role": "assistant", "content": "A5."}],
                 "audios": ["a.wav", "b.wav"]},
                {"messages": [{"role": "user", "content": "<audio>Describe it."},
                              {"role": "assistant", "content": "A steady tone."}], "audios": ["b.wav"]}]
  text = [{"messages": [{"role": "user", "content": f"Count to {k}."},
                        {"role": "assistant", "content": " ".join(str(i) for i in range(1, k + 1))}]}
          for k in (2, 3, 4)]
  for name, rows in (("audio", with_audio), ("text", text)):
    (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  cfg = defaults.base_config()
  cfg.data.max_audios, cfg.data.seq_buckets, cfg.data.min_examples_for_bad_check = 2, (160,), 1
  cfg.data.max_bad_fraction = 0.0
  cfg.data.sources = [dict(name="conversations", path=str(tmp_path / "audio.jsonl"), weight=1.0),
                      dict(name="conversations", path=str(tmp_path / "text.jsonl"), weight=1.0)]
  it = make_train_iterator(cfg.data, global_batch_size=6, seed=0, process_index=0, process_count=1)
  host = next(it)
  it.close()
  mcfg = model_fns.resolve_model_config(cfg.model)  # tiny-qwen-audio with the real token ids
  loop.check_data_matches_model(cfg.data, mcfg)
  loop.check_host_batch(host, mcfg)
  has_audio = (host["input_ids"] == mcfg.audio_start_id).any(1)
  slots = host["audio_lengths"].reshape(6, 2)
  assert has_audio.any() and (~has_audio).any() and host["example_mask"].all()
  assert (slots[~has_audio] == 0).all() and (host["audio_mel"].reshape(6, 2, -1)[~has_audio] == 0).all()
  assert (slots[has_audio][:, 0] > 0).all()
  assert (host["loss_mask"].sum(1) > 0).all()  # every row trains on its answers (and their <|im_end|>)
  plan = state_lib.make_plan(model_fns.build(mcfg), optimizer.make_optimizer(cfg.optim, 10),
                             mesh_lib.make_mesh((1, 1, 1), devices=jax.devices()[:1]), cfg.train)
  state = state_lib.create(plan, 0)
  train_step = step_lib.make_train_step(plan, cfg.train)
  batch = partition.host_to_global(loop.device_batch(host, 200), plan.mesh)  # clips <= 2 s: 200 mel frames
  losses = []
  for _ in range(3):
    state, metrics = train_step(state, batch)
    losses.append(float(metrics["loss"]))
  print(f"mixed audio/text SFT batch: losses {losses}")
  assert all(np.isfinite(losses)) and losses[-1] < losses[0]
  assert float(metrics["tokens"]) == host["loss_mask"].sum()
  assert float(metrics["grad_norm/audio_encoder"]) > 0  # the audio rows reach the encoder


@pytest.mark.parametrize("name,family", [("qwen_audio_7b_sft", "qwen-audio"), ("qwen2_audio_7b_sft", "qwen2-audio")])
def test_sft_configs_train_the_chat_format(name, family, tmp_path):
  """The two SFT configs read conversations and encode them as ChatML with <|im_end|> in the loss."""
  import os
  import runpy
  from qwen_audio_jax.data.examples import ExampleEncoder
  from qwen_audio_jax.data.sources import records_of
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  from qwen_audio_jax.data.config import source_entries
  cfg = runpy.run_path(os.path.join(root, "configs", f"{name}.py"))["get_config"]()
  assert cfg.data.family == family and not cfg.data.sources  # no default data set
  path = tmp_path / "c.jsonl"
  path.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi"},
                                           {"role": "assistant", "content": "Hello."}]}))
  cfg.data.train_manifest = str(path)  # what --config.data.train_manifest=... sets; its kind is detected
  (entry,) = source_entries(cfg.data)
  (record,) = records_of(entry)
  encoded = ExampleEncoder.from_config(cfg.data).encode(record)
  tok = get_tokenizer(family)
  targets = encoded.ids[encoded.loss_mask == 1].tolist()
  assert targets == tok.encode("Hello.") + [tok.im_end_id] + tok.encode("\n")
  assert tok.eod_id not in encoded.ids.tolist()
