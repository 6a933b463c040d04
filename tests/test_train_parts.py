"""Small pieces of the trainer: SpecAugment, LR schedule, freeze patterns, the TensorBoard writer, the
loss-curve PNG, the answer-only loss mask of real pipeline batches, and config resolution."""

import json
import os
import runpy
import struct
import zlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from qwen_audio_jax.train import freeze, optimizer, plot, specaugment, tb

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def test_specaugment_masks_only_valid_frames_and_is_deterministic():
  rng = np.random.default_rng(0)
  mel = jnp.asarray(rng.standard_normal((3, 80, 400)) + 5.0, jnp.float32)
  lengths = jnp.asarray([400, 250, 0])
  kw = dict(freq_masks=2, freq_width=20, time_masks=2, time_width=40, time_ratio=0.2)
  out = np.asarray(specaugment.spec_augment(jax.random.PRNGKey(0), mel, lengths, **kw))
  again = np.asarray(specaugment.spec_augment(jax.random.PRNGKey(0), mel, lengths, **kw))
  other = np.asarray(specaugment.spec_augment(jax.random.PRNGKey(1), mel, lengths, **kw))
  np.testing.assert_array_equal(out, again)
  assert not np.array_equal(out, other)
  changed = out != np.asarray(mel)
  assert not changed[1, :, 250:].any() and not changed[2].any()  # padding and empty clips untouched
  assert changed[0].any() and changed[1].any()
  for i, n in ((0, 400), (1, 250)):
    fill = np.asarray(mel)[i, :, :n].mean()
    np.testing.assert_allclose(out[i][changed[i]], fill, rtol=1e-5)  # masked bins = clip mean
    time_masked = changed[i].all(axis=0).sum()
    assert time_masked <= 2 * min(40, int(0.2 * n))
    freq_masked = changed[i, :, :n].all(axis=1).sum()
    assert freq_masked <= 2 * 20
  assert specaugment.from_config(ml_collections.ConfigDict({"enabled": False})) is None


def test_warmup_cosine_schedule():
  cfg = ml_collections.ConfigDict(dict(lr=1e-3, warmup_steps=10, final_lr_fraction=0.1))
  lr = optimizer.learning_rate(cfg, 110)
  assert float(lr(0)) == 0.0
  assert abs(float(lr(5)) - 5e-4) < 1e-9 and abs(float(lr(10)) - 1e-3) < 1e-9
  assert abs(float(lr(60)) - (1e-4 + 0.5 * 9e-4)) < 1e-8  # half-way down the cosine
  assert abs(float(lr(110)) - 1e-4) < 1e-9


def test_clipping_bounds_the_update():
  cfg = ml_collections.ConfigDict(dict(lr=1.0, warmup_steps=0, final_lr_fraction=1.0, b1=0.0, b2=0.0,
                                       eps=0.0, weight_decay=0.0, clip_norm=1.0))
  opt = optimizer.make_optimizer(cfg, 10)
  params = {"w": {"kernel": jnp.zeros((4,))}}
  grads = {"w": {"kernel": jnp.full((4,), 100.0)}}
  updates, _ = opt.update(grads, opt.init(params), params)
  np.testing.assert_allclose(np.asarray(updates["w"]["kernel"]), -1.0, rtol=1e-5)  # Adam(b=0): sign


def test_freeze_patterns():
  params = {"decoder": {"layers": {"q": {"kernel": np.zeros((2, 3))}}, "lm_head": {"kernel": np.zeros(3)}},
            "audio_encoder": {"embed_positions": np.zeros(4), "conv1": {"kernel": np.zeros(2)}}}
  mask = freeze.trainable_mask(params, freeze=(r"decoder/.*",), trainable=(r"decoder/lm_head/.*",))
  assert mask == {("decoder", "layers", "q", "kernel"): False, ("decoder", "lm_head", "kernel"): True,
                  ("audio_encoder", "embed_positions"): False, ("audio_encoder", "conv1", "kernel"): True}
  tr, fz = freeze.split(params, mask)
  assert set(freeze.merge(tr, fz)) == set(params) and freeze.count(tr) == 5
  with pytest.raises(freeze.FreezeConfigError, match="match no parameter"):
    freeze.trainable_mask(params, freeze=(r"llm/.*",))
  with pytest.raises(freeze.FreezeConfigError, match="bad regex"):
    freeze.trainable_mask(params, freeze=(r"(",))


def test_tensorboard_events_parse_as_protobuf(tmp_path):
  from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
  assert tb.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
  w = tb.ScalarWriter(str(tmp_path))
  w.scalars(3, {"loss": 2.5, "lr": 1e-3})
  w.scalars(4, {"loss": 2.25})
  w.close()
  assert tb.read_scalars(w.path) == [(3, {"loss": 2.5, "lr": pytest.approx(1e-3)}), (4, {"loss": 2.25})]
  # Independent decode with the real protobuf library and TensorFlow's Event/Summary field numbers.
  f = descriptor_pb2.FileDescriptorProto(name="ev.proto", package="t", syntax="proto3")
  value = f.message_type.add(name="Value")
  value.field.add(name="tag", number=1, type=9, label=1)
  value.field.add(name="simple_value", number=2, type=2, label=1)
  summary = f.message_type.add(name="Summary")
  summary.field.add(name="value", number=1, type=11, label=3, type_name=".t.Value")
  event = f.message_type.add(name="Event")
  event.field.add(name="wall_time", number=1, type=1, label=1)
  event.field.add(name="step", number=2, type=3, label=1)
  event.field.add(name="file_version", number=3, type=9, label=1)
  event.field.add(name="summary", number=5, type=11, label=1, type_name=".t.Summary")
  pool = descriptor_pool.DescriptorPool()
  pool.Add(f)
  Event = message_factory.GetMessageClass(pool.FindMessageTypeByName("t.Event"))
  data, pos, events = open(w.path, "rb").read(), 0, []
  while pos < len(data):
    (n,) = struct.unpack("<Q", data[pos:pos + 8])
    events.append(Event.FromString(data[pos + 12:pos + 12 + n]))
    pos += 16 + n
  assert events[0].file_version == "brain.Event:2"
  assert events[1].step == 3 and events[1].summary.value[0].tag == "loss"
  assert events[1].summary.value[0].simple_value == 2.5


def test_loss_curve_png(tmp_path):
  path = tmp_path / "loss.png"
  plot.loss_curve(str(path), [1, 2, 3, 4], [4.0, 3.0, float("nan"), 2.0], [4], [2.5], size=(200, 120))
  data = path.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n"
  w, h = struct.unpack(">II", data[16:24])
  assert (w, h) == (200, 120)
  idat = data[data.index(b"IDAT") + 4:data.index(b"IEND") - 8]
  raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 3 * w)[:, 1:].reshape(h, w, 3)
  assert ((raw == plot.BLUE).all(-1)).sum() > 50 and ((raw == plot.RED).all(-1)).sum() > 0


def test_pipeline_loss_mask_covers_exactly_the_answer_tokens():
  from qwen_audio_jax.data import config as data_config, pipeline
  it = pipeline.make_train_iterator(data_config.default_config(), global_batch_size=4, seed=3,
                                    process_index=0, process_count=1)
  batch = next(it)
  enc, tok = it.builder.encoder, it.builder.encoder.tokenizer
  for b in range(4):
    record = it.builder.mixtures[0][b]  # global position b of batch 0 (no bad examples here)
    answer = enc.answer_ids(record, enc.prompt_text(record)) + [tok.eod_id]
    mask = batch["loss_mask"][b] == 1
    assert batch["targets"][b][mask].tolist() == answer
    n = int(batch["attention_mask"][b].sum())
    assert mask.nonzero()[0].tolist() == list(range(n - 1 - len(answer), n - 1))  # a contiguous tail
  it.close()


def test_configs_resolve():
  from qwen_audio_jax.train import model_fns
  names = ("tiny_synthetic", "qwen_audio_7b_pretrain", "qwen_audio_7b_sft", "qwen2_audio_7b_sft",
           "qwen_audio_7b_lora")
  for name in names:
    cfg = runpy.run_path(os.path.join(CONFIGS, f"{name}.py"))["get_config"]()
    mcfg = model_fns.resolve_model_config(cfg.model)
    assert mcfg.family in ("qwen-audio", "qwen2-audio")
    if "7b" in name:  # 1024 = 128 x tensor for tensor <= 8: embedding and lm_head split over tensor
      assert mcfg.decoder.vocab_pad_to == 1024 and all(mcfg.decoder.padded_vocab % (128 * t) == 0 for t in (2, 4, 8))
    json.loads(cfg.to_json_best_effort())
  pre = runpy.run_path(os.path.join(CONFIGS, "qwen_audio_7b_pretrain.py"))["get_config"]()
  assert model_fns.resolve_model_config(pre.model).dtype == "bfloat16"
  bad = ml_collections.ConfigDict({"preset": "tiny-qwen-audio", "overrides": {"decoder": {"n_layer": 3}}})
  with pytest.raises(KeyError, match="n_layer"):
    model_fns.resolve_model_config(bad)
