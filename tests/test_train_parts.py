"""Small pieces of the trainer: SpecAugment, LR schedule, freeze patterns, the TensorBoard writer (read
back with TensorBoard's own reader), the matplotlib loss-curve PNG, the answer-only loss mask of real pipeline
batches, and config resolution."""

import json
import os
import runpy

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from qwen_audio_jax.train import freeze, optimizer, plot, specaugment, writers

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
  # ALWAYS_FROZEN wins over a broad trainable pattern (full encoder fine-tuning keeps the positional table fixed)
  mask = freeze.trainable_mask(params, freeze=(r".*",), trainable=(r"audio_encoder/.*",))
  assert mask[("audio_encoder", "embed_positions")] is False and mask[("audio_encoder", "conv1", "kernel")]
  with pytest.raises(freeze.FreezeConfigError, match="match no parameter"):
    freeze.trainable_mask(params, freeze=(r"llm/.*",))
  with pytest.raises(freeze.FreezeConfigError, match="bad regex"):
    freeze.trainable_mask(params, freeze=(r"(",))


def read_events(logdir):
  """Everything TensorBoard itself reads from `logdir` (its own event reader, no TensorFlow needed)."""
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(str(logdir), size_guidance={k: 0 for k in (
      event_accumulator.SCALARS, event_accumulator.HISTOGRAMS, event_accumulator.AUDIO, event_accumulator.TENSORS)})
  acc.Reload()
  return acc


def test_summary_writer_events_read_back_by_tensorboard(tmp_path):
  w = writers.open_writer(str(tmp_path))
  w.scalars(3, {"loss": 2.5, "lr": 1e-3})
  w.scalars(4, {"loss": 2.25})
  w.histogram(4, "grad_norms/decoder", [0.5, 1.0, 1.5, float("nan")])
  wave = 0.5 * np.sin(2 * np.pi * 440 * np.arange(1600) / 16000)
  w.audio(4, "eval/sample_0", wave, sample_rate=16000)
  w.text(4, "eval/answer_0", "The person says: hello")
  w.close()
  acc = read_events(tmp_path)
  assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(3, 2.5), (4, 2.25)]
  assert [(e.step, e.value) for e in acc.Scalars("lr")] == [(3, pytest.approx(1e-3))]
  (hist,) = acc.Histograms("grad_norms/decoder")
  assert hist.step == 4 and hist.histogram_value.num == 3 and hist.histogram_value.sum == pytest.approx(3.0)
  (audio,) = acc.Audio("eval/sample_0")
  assert audio.step == 4 and audio.sample_rate == 16000 and audio.encoded_audio_string[:4] == b"RIFF"
  import io
  import soundfile
  decoded, sr = soundfile.read(io.BytesIO(audio.encoded_audio_string), dtype="float32")
  assert sr == 16000 and np.max(np.abs(decoded - wave)) < 1e-4  # 16-bit PCM
  (text,) = acc.Tensors("eval/answer_0/text_summary")
  assert text.step == 4 and text.tensor_proto.string_val == [b"The person says: hello"]
  none = writers.open_writer(None)  # TensorBoard off: same API, no files
  none.scalars(1, {"loss": 1.0})
  none.close()


def test_tensorboardx_import_does_not_pull_in_torch():
  import subprocess
  import sys
  code = ("import sys; from qwen_audio_jax.train import writers; writers._tensorboardx(); "
          "print(any(m.split('.')[0] == 'torch' for m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "False"


def check_matplotlib_png(path, size_px):
  """A PNG written by matplotlib (its Software text chunk) of `size_px`; returns the RGB pixels."""
  from PIL import Image
  with Image.open(path) as img:
    assert img.format == "PNG" and img.size == size_px
    assert img.info.get("Software", "").startswith("Matplotlib version")
    return np.asarray(img.convert("RGB"))


def test_loss_curve_is_a_matplotlib_figure(tmp_path):
  path = tmp_path / "loss.png"
  plot.loss_curve(str(path), [1, 2, 3, 4], [4.0, 3.0, float("nan"), 2.0], [2, 4], [3.5, 2.5], size=(4, 3), dpi=100)
  rgb = check_matplotlib_png(path, (400, 300)).astype(int)
  near = lambda color: (np.abs(rgb - np.array(color)).sum(-1) < 30).sum()
  assert near((31, 119, 180)) > 100 and near((214, 39, 40)) > 100  # matplotlib's tab:blue / tab:red curves
  assert ((rgb < 60).all(-1)).sum() > 200  # black text: tick labels, axis labels, title, legend
  empty = tmp_path / "empty.png"
  plot.loss_curve(str(empty), [], [])
  check_matplotlib_png(empty, (800, 500))


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
  lora_cfg = runpy.run_path(os.path.join(CONFIGS, "qwen_audio_7b_lora.py"))["get_config"]()
  assert model_fns.resolve_model_config(lora_cfg.model).param_dtype == "bfloat16"  # frozen base: no fp32 copy
  bad = ml_collections.ConfigDict({"preset": "tiny-qwen-audio", "overrides": {"decoder": {"n_layer": 3}}})
  with pytest.raises(KeyError, match="n_layer"):
    model_fns.resolve_model_config(bad)
