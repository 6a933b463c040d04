"""What Whisper decoding needs besides the weights: special ids, suppressed tokens, lengths.

The converter stores one record as `metadata.json["generation"]` of a Whisper checkpoint, with transformers'
generation_config.json key names plus `timestamp_begin`, `no_speech_token_id` and `max_target_positions`:
  decoder_start_token_id (<|startoftranscript|>), eos_token_id, pad_token_id, prev_sot_token_id,
  no_timestamps_token_id, no_speech_token_id, timestamp_begin, lang_to_id {"<|en|>": id}, task_to_id,
  suppress_tokens, begin_suppress_tokens, max_initial_timestamp_index, is_multilingual,
  max_target_positions (decoder positions = the most tokens one decode may hold), source.
A key is null when the source does not say (e.g. an openai .pt converted without its vocabulary has no
suppress lists: they depend on the BPE). Sources: a transformers folder's generation_config.json as is;
an openai checkpoint: openai-whisper's decoding defaults (non-speech symbols + the task/sot specials
suppressed, " " and <|endoftext|> suppressed at the first step, first timestamp <= 1.0 s).
"""

from __future__ import annotations

import json
import os

from qwen_audio_jax.tokenizer import whisper_specials as ws
from qwen_audio_jax.tokenizer.whisper import WhisperTokenizer

HF_KEYS = ("decoder_start_token_id", "eos_token_id", "pad_token_id", "prev_sot_token_id", "no_timestamps_token_id",
           "lang_to_id", "task_to_id", "suppress_tokens", "begin_suppress_tokens", "max_initial_timestamp_index",
           "is_multilingual")
KEYS = HF_KEYS + ("no_speech_token_id", "timestamp_begin", "max_target_positions", "source")
MAX_INITIAL_TIMESTAMP_S = 1.0  # openai DecodingOptions.max_initial_timestamp


def from_transformers(generation_config: dict, max_target_positions: int) -> dict:
  """The record of a transformers folder (generation_config.json may be {} when the folder has none)."""
  out = dict.fromkeys(KEYS)
  out.update({k: generation_config[k] for k in HF_KEYS if k in generation_config})
  if out["no_timestamps_token_id"] is not None:
    out["timestamp_begin"] = out["no_timestamps_token_id"] + 1
  out.update(max_target_positions=max_target_positions, source="generation_config.json")
  return out


def from_tokenizer(tok: WhisperTokenizer, max_target_positions: int) -> dict:
  """openai-whisper's decoding defaults for a checkpoint whose vocabulary is `tok`."""
  suppress = set(tok.non_speech_tokens()) | {tok.transcribe, tok.translate, tok.sot, tok.sot_prev, tok.sot_lm,
                                             tok.no_speech}
  return {"decoder_start_token_id": tok.sot, "eos_token_id": tok.eot, "pad_token_id": tok.eot,
          "prev_sot_token_id": tok.sot_prev, "no_timestamps_token_id": tok.no_timestamps,
          "lang_to_id": {f"<|{code}|>": i for code, i in tok.languages.items()},
          "task_to_id": {"translate": tok.translate, "transcribe": tok.transcribe},
          "suppress_tokens": sorted(suppress), "begin_suppress_tokens": tok.encode(" ") + [tok.eot],
          "max_initial_timestamp_index": round(MAX_INITIAL_TIMESTAMP_S / ws.TIME_STEP),
          "is_multilingual": tok.vocab_size >= 51865, "no_speech_token_id": tok.no_speech,
          "timestamp_begin": tok.timestamp_begin, "max_target_positions": max_target_positions,
          "source": f"openai-whisper defaults with {os.path.basename(tok.path)}"}


def from_openai_dims(n_vocab: int, max_target_positions: int) -> dict:
  """Without the vocabulary: special ids from openai's layout (null for a vocabulary that is not Whisper's)."""
  out = dict.fromkeys(KEYS)
  out.update(max_target_positions=max_target_positions, source="openai dims (no vocabulary: no suppress lists)")
  layout = ws.openai_layout(n_vocab)
  if layout is None:
    return out
  n_ranks, n_languages = layout
  ids = {s: n_ranks + i for i, s in enumerate(ws.openai_specials(n_languages))}
  out.update(decoder_start_token_id=ids[ws.SOT], eos_token_id=ids[ws.EOT], pad_token_id=ids[ws.EOT],
             prev_sot_token_id=ids[ws.SOT_PREV], no_timestamps_token_id=ids[ws.NO_TIMESTAMPS],
             lang_to_id={f"<|{c}|>": ids[f"<|{c}|>"] for c in ws.LANGUAGES[:n_languages]},
             task_to_id={t: ids[f"<|{t}|>"] for t in ws.TASKS},
             max_initial_timestamp_index=round(MAX_INITIAL_TIMESTAMP_S / ws.TIME_STEP),
             is_multilingual=n_vocab >= 51865, no_speech_token_id=ids[ws.NO_SPEECH],
             timestamp_begin=ids[ws.time_token(0)])
  return out


def read_generation(checkpoint_dir: str) -> dict:
  """The record of a converted Whisper checkpoint; ValueError (one line) when it has none."""
  path = os.path.join(checkpoint_dir, "metadata.json")
  try:
    with open(path) as f:
      record = json.load(f).get("generation")
  except (OSError, ValueError) as e:
    raise ValueError(f"{path}: cannot read ({e})")
  if not record:
    raise ValueError(f"{path}: no Whisper generation record (converted before the text decoder was supported, "
                     "or not a Whisper checkpoint); reconvert it")
  return record
