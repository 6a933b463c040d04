"""Contracts between modules found in review: data batches ↔ model input checks."""

import dataclasses

import numpy as np
import pytest

from qwen_audio_jax.data import ExampleEncoder, collate_eval, collate_train, synthetic
from qwen_audio_jax.model import AudioPlaceholderError, check_audio_placeholders
from qwen_audio_jax.model.config import get_config
from qwen_audio_jax.train.loop import check_host_batch


@pytest.fixture(scope="module")
def encoded():
  encoder = ExampleEncoder(max_tokens=256, max_audios=2)
  return encoder, encoder.encode(synthetic.generate("asr", 3))


@pytest.mark.parametrize("collate", [collate_train, collate_eval])
def test_batches_with_absent_audio_slots_pass_the_placeholder_check(encoded, collate):
  """Empty rows and unused audio slots (T = 0) are absent audios, not audios missing their tags."""
  encoder, example = encoded
  cfg = get_config("tiny-qwen-audio")
  batch = collate([example, None], buckets=(256,), max_audios=2, n_mels=80, pad_id=encoder.tokenizer.pad_id)
  assert batch["audio_lengths"].tolist()[1:] == [0, 0, 0] and batch["audio_lengths"][0] > 0
  check_audio_placeholders(batch["input_ids"], batch["audio_lengths"], cfg, batch["audio_mel"].shape[-1])
  check_host_batch(batch, cfg)
  # an absent slot never hides a real disagreement
  bad = dict(batch, input_ids=np.where(batch["input_ids"] == cfg.audio_end_id, 7, batch["input_ids"]))
  with pytest.raises(AudioPlaceholderError, match="one start and one end tag per audio"):
    check_host_batch(bad, cfg)
  lens = batch["audio_lengths"].copy()
  lens[1] = lens[0]  # a second audio without any span
  with pytest.raises(AudioPlaceholderError, match="placeholder count != feature count"):
    check_host_batch(dict(batch, audio_lengths=lens), cfg)


def test_data_config_must_match_the_model():
  """A data family / n_mels that does not fit the model fails up front, naming the config keys."""
  from qwen_audio_jax.data import config as data_config
  from qwen_audio_jax.train.loop import ConfigMismatchError, check_data_matches_model
  q2 = get_config("tiny-qwen2-audio")
  check_data_matches_model(data_config.as_config({"family": "qwen2-audio", "n_mels": 128}), q2)
  check_data_matches_model(data_config.as_config({}), get_config("tiny-qwen-audio"))
  with pytest.raises(ConfigMismatchError, match=r"data.family='qwen-audio'.*audio_pad_id=151851.*151646"):
    check_data_matches_model(data_config.as_config({"n_mels": 128}), q2)
  with pytest.raises(ConfigMismatchError, match=r"data.n_mels=80 .* n_mels=128"):
    check_data_matches_model(data_config.as_config({"family": "qwen2-audio"}), q2)
  small_vocab = q2.replace(decoder=dataclasses.replace(q2.decoder, vocab_size=1000))
  with pytest.raises(ConfigMismatchError, match=r"vocab_size=1000"):
    check_data_matches_model(data_config.as_config({"family": "qwen2-audio", "n_mels": 128}), small_vocab)
