"""A converted checkpoint (conversion/convert.py output) is what training starts from, unchanged."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conversion import tiny_models
from qwen_audio_jax import checkpoint_io
from qwen_audio_jax.model import config as model_config
from qwen_audio_jax.train import checkpointing, defaults, loop, testing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  root = tmp_path_factory.mktemp("from_converted")
  tiny_models.hf_qwen_audio(str(root / "torch"))
  out = root / "orbax"
  subprocess.run([sys.executable, "conversion/convert.py", "--source=hf-qwen-audio", f"--input={root / 'torch'}",
                  f"--output={out}"], cwd=REPO, check=True, capture_output=True, text=True)
  return str(out)


def _plan_for(model_cfg, workdir):
  cfg = testing.mini_config()
  overrides = model_config.to_dict(model_cfg)
  assert overrides.pop("family") == "qwen-audio"  # the preset's family; every other field overridden
  cfg.model = defaults.model_block("tiny-qwen-audio", **overrides)
  return loop.setup(cfg, str(workdir))[2]


def test_training_restores_a_converted_checkpoint(converted, tmp_path):
  ckpt_cfg, expected, _ = checkpoint_io.load_model_checkpoint(converted)
  plan = _plan_for(ckpt_cfg, tmp_path)
  params = checkpointing.restore_params_dir(converted, plan)
  flat_got, flat_want = checkpoint_io.flatten(params), checkpoint_io.flatten(expected)
  assert set(flat_got) == set(flat_want)
  for path, want in flat_want.items():
    got = flat_got[path]
    assert got.sharding == checkpoint_io.flatten(plan.shardings["params"])[path], path
    np.testing.assert_array_equal(np.asarray(jax.device_get(got)), np.asarray(want), err_msg=path)


def test_converted_checkpoint_of_another_shape_is_refused(converted, tmp_path):
  ckpt_cfg = checkpoint_io.read_config(converted)
  other = ckpt_cfg.replace(decoder=ckpt_cfg.decoder.__class__(
      **{**model_config.to_dict(ckpt_cfg)["decoder"], "mlp_dim": ckpt_cfg.decoder.mlp_dim + 8}))
  plan = _plan_for(other, tmp_path)
  with pytest.raises(checkpoint_io.CheckpointError, match=r"decoder/layers/mlp/.*shape"):
    checkpointing.restore_params_dir(converted, plan)
