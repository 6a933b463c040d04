"""MoWE / encoder-PETL conversion: compose with two tiny Whisper weak encoders, a gradient step (training),
export (HF files + mowe.safetensors / encoder_petl.safetensors beside them), convert back: bit-exact."""

import json
import os

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conversion import compose, convert, export, tiny_models  # noqa: E402
from conversion.errors import ConversionError  # noqa: E402
from qwen_audio_jax import checkpoint_io  # noqa: E402
from qwen_audio_jax.model import init_params  # noqa: E402
from qwen_audio_jax.model.config import EncoderPetlConfig  # noqa: E402
from qwen_audio_jax.train import model_fns, testing  # noqa: E402

quiet = lambda *a, **k: None


@pytest.fixture(scope="module")
def composed(tmp_path_factory):
  root = tmp_path_factory.mktemp("mowe_src")
  base = tiny_models.hf_whisper(str(root / "base-whisper"), seed=0)
  tiny_models.openai_whisper(str(root / "base.pt"), base, dtype=torch.float32)
  tiny_models.hf_whisper(str(root / "weak0"), seed=11)  # transformers folder
  tiny_models.openai_whisper(str(root / "weak1.pt"), tiny_models.hf_whisper(str(root / "w1"), seed=12),
                             dtype=torch.float32)  # openai .pt
  tiny_models.hf_qwen(str(root / "qwen"))
  weak = [str(root / "weak0"), str(root / "weak1.pt")]
  out = compose.compose(str(root / "base.pt"), str(root / "qwen"), str(root / "composed"), weak_paths=weak,
                        log=quiet)
  return root, out, weak


def test_compose_fills_weak_encoders_from_whisper(composed):
  root, out, weak = composed
  cfg, params, meta = checkpoint_io.load_model_checkpoint(out)
  assert len(cfg.mowe.weak) == 2 and all(w.pool for w in cfg.mowe.weak) and meta["compose"]["weak"] == weak
  for k, path in enumerate(weak):
    flag = "openai-whisper" if path.endswith(".pt") else "hf-whisper"
    alone = convert.convert(flag, path, str(root / f"alone{k}"), log=quiet)
    _, wparams, _ = checkpoint_io.load_model_checkpoint(alone)
    got, want = checkpoint_io.flatten(params["mowe"][f"weak_{k}"]), checkpoint_io.flatten(wparams["audio_encoder"])
    assert sorted(got) == sorted(want)
    for name in want:
      np.testing.assert_array_equal(got[name], want[name])
  assert not np.array_equal(params["mowe"]["weak_0"]["conv1"]["kernel"], params["mowe"]["weak_1"]["conv1"]["kernel"])
  np.testing.assert_array_equal(params["mowe"]["router_logits"], 0)
  assert abs(float(np.std(params["mowe"]["proj_0"]["kernel"])) - 0.02) < 0.006


def test_compose_train_export_convert_round_trip_is_bit_exact(composed, tmp_path):
  root, out, _ = composed
  cfg, params, meta = checkpoint_io.load_model_checkpoint(out)
  cfg = cfg.replace(encoder_petl=EncoderPetlConfig(adapter_reduction=4, prompt_tokens=3))
  fresh = init_params(cfg, jax.random.PRNGKey(0))
  params = dict(params, audio_encoder={**params["audio_encoder"], "prompts": fresh["audio_encoder"]["prompts"],
                                       "layers": {**params["audio_encoder"]["layers"],
                                                  **{k: v for k, v in fresh["audio_encoder"]["layers"].items()
                                                     if k.endswith("_adapter")}}})
  fns = model_fns.build(cfg)
  batch = testing.batch(cfg, seed=0, batch_size=2, seq_len=80, mel_frames=120)
  grads = jax.grad(lambda p: fns.loss_and_stats(p, batch, True)[0])(params)  # one SGD step: "trained"
  trained = jax.tree.map(lambda p, g: np.asarray(p - 0.5 * g, np.float32), params, grads)
  changed = checkpoint_io.flatten(jax.tree.map(lambda a, b: bool(np.any(a != b)), trained, params))
  assert changed["mowe/router_logits"] and changed["mowe/gate/kernel"] and changed["mowe/weak_1/conv1/kernel"]
  assert changed["audio_encoder/layers/attn_adapter/up/kernel"]
  run = checkpoint_io.save_model_checkpoint(str(tmp_path / "trained"), cfg, trained, meta)
  hf = export.export(run, "hf-qwen-audio", str(tmp_path / "hf"), log=quiet)
  files = sorted(os.listdir(hf))
  assert {"mowe.safetensors", "mowe_config.json", "encoder_petl.safetensors", "encoder_petl_config.json"} <= set(files)
  assert json.load(open(os.path.join(hf, "mowe_config.json")))["format"] == "qwen-audio-jax/mowe"
  back = convert.convert("hf-qwen-audio", hf, str(tmp_path / "back"), log=quiet)
  cfg2, params2, _ = checkpoint_io.load_model_checkpoint(back)
  assert cfg2.mowe == cfg.mowe and cfg2.encoder_petl == cfg.encoder_petl
  a, b = checkpoint_io.flatten(trained), checkpoint_io.flatten(params2)
  assert sorted(a) == sorted(b)
  for name in a:
    assert np.asarray(a[name]).tobytes() == np.asarray(b[name]).tobytes(), name


def test_half_written_mowe_files_are_refused(composed, tmp_path):
  _, out, _ = composed
  hf = export.export(out, "hf-qwen-audio", str(tmp_path / "hf"), log=quiet)
  os.remove(os.path.join(hf, "mowe.safetensors"))
  with pytest.raises(ConversionError, match="mowe.safetensors and mowe_config.json go together"):
    convert.convert("hf-qwen-audio", hf, str(tmp_path / "back"), log=quiet)
  assert not os.path.exists(tmp_path / "back")
