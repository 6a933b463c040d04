"""Parameter trees from shapes only (no allocation): counts, logical axes, every preset traces."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen_audio_jax.model import PRESETS, Model, abstract_params, count_params, get_config, logical_axes
from qwen_audio_jax.sharding.rules import LOGICAL_AXIS_RULES


def test_qwen_audio_7b_counts_match_spec():
  cfg = get_config("qwen-audio-7b")
  total = count_params(cfg)
  llm = count_params(cfg, "decoder")
  audio = sum(count_params(cfg, k) for k in ("audio_encoder", "audio_projector", "audio_bos_eos"))
  assert (total, audio, llm) == (8_394_302_464, 640_119_808, 7_754_182_656)


def _flat(tree, is_leaf=None):
  return {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]}


@pytest.mark.parametrize("name", ["qwen-audio-7b", "qwen2-audio-7b", "tiny-qwen", "whisper-large-v3"])
def test_every_param_has_logical_axes(name):
  cfg = get_config(name)
  shapes = _flat(abstract_params(cfg))
  specs = _flat(logical_axes(cfg), is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  known = {rule[0] for rule in LOGICAL_AXIS_RULES}
  assert shapes.keys() == specs.keys()
  for key, leaf in shapes.items():
    spec = tuple(specs[key])
    assert len(spec) == leaf.ndim and all(n in known for n in spec), (key, spec, leaf.shape)
    assert (spec[0] == "layers") == ("['layers']" in key), (key, spec)


@pytest.mark.parametrize("name", sorted(n for n in PRESETS if n.startswith("whisper")) + ["qwen2-audio-7b"])
def test_presets_init_and_trace_without_allocation(name):
  cfg = get_config(name)
  params = abstract_params(cfg)
  enc = cfg.encoder
  assert params["audio_encoder"]["conv1"]["kernel"].shape == (3, enc.n_mels, enc.d_model)
  assert params["audio_encoder"]["layers"]["attn"]["key"]["kernel"].shape == (enc.n_layers, enc.d_model, enc.d_model)
  assert "bias" not in params["audio_encoder"]["layers"]["attn"]["key"]
  mel = jax.ShapeDtypeStruct((2, enc.n_mels, enc.n_frames), jnp.float32)
  out = jax.eval_shape(lambda p, m: Model(cfg).apply({"params": p}, m, method=Model.encode_audio), params, mel)
  frames = enc.n_ctx // 2 if enc.pool else enc.n_ctx
  width = cfg.decoder.d_model if cfg.decoder is not None else enc.d_model
  assert out.shape == (2, frames, width)


def test_param_dtype_follows_config():
  cfg = get_config("tiny-qwen-audio", param_dtype="bfloat16")
  dtypes = {leaf.dtype for leaf in jax.tree.leaves(abstract_params(cfg))}
  assert dtypes == {jnp.dtype("bfloat16")}
  assert count_params(cfg) == count_params(get_config("tiny-qwen-audio"))
  assert np.isclose(count_params(get_config("qwen2-audio-7b")) / 1e9, 8.4, atol=0.1)
