"""An exported LoRA adapter is a real HF-PEFT adapter: PEFT applies it to the transformers model and
gets the logits of our merged model (Qwen2-Audio naming)."""

import jax
import numpy as np
import peft
import torch
import transformers
from flax import traverse_util

from conversion import convert, tiny_models, verify
from qwen_audio_jax import checkpoint_io
from qwen_audio_jax.audio import lengths
from qwen_audio_jax.model import Model
from qwen_audio_jax.train import lora as lora_lib, peft_export

RANK, ALPHA = 4, 8.0
TARGETS = (r"decoder/layers/attn/(q|k|v|o)", r"decoder/layers/mlp/(gate|up|down)")


def test_peft_loads_our_qwen2_audio_adapter_and_matches_merged_logits(tmp_path):
  torch_model = tiny_models.hf_qwen2_audio(str(tmp_path / "hf"))
  ckpt = convert.convert("hf-qwen2-audio", str(tmp_path / "hf"), str(tmp_path / "orbax"), log=lambda *a: None)
  cfg, params, _ = checkpoint_io.load_model_checkpoint(ckpt)
  params = jax.tree.map(np.asarray, params)
  lora = lora_lib.init(jax.random.key(0), params, TARGETS, RANK)
  rng = np.random.default_rng(1)  # trained-looking adapters: B != 0
  lora = traverse_util.unflatten_dict({
      k: (np.asarray(v) if k[-1] == "lora_a" else 0.05 * rng.standard_normal(v.shape).astype(np.float32))
      for k, v in traverse_util.flatten_dict(lora).items()})
  adapter_dir = peft_export.export(lora, str(tmp_path / "adapter"), rank=RANK, alpha=ALPHA, naming="qwen2-audio")

  mel, frames = verify.sample_mel(128, seconds=2.5)
  n = int(lengths.pooled_frames(frames))
  pad = torch_model.config.audio_token_index
  ids = np.array([[3, 7, 11] + [pad] * n + [13, 17, 19, 23]], np.int64)

  merged = lora_lib.merge(params, lora, lora_lib.scale(RANK, ALPHA))
  ours = np.asarray(Model(cfg).apply({"params": merged}, ids.astype(np.int32), np.ones_like(ids, np.int32),
                                     np.asarray(mel), np.array([frames], np.int32)))[0]

  base = transformers.Qwen2AudioForConditionalGeneration.from_pretrained(
      str(tmp_path / "hf"), attn_implementation="eager", dtype=torch.float32)
  with_adapter = peft.PeftModel.from_pretrained(base, adapter_dir).eval()
  kw = dict(input_features=torch.from_numpy(np.array(mel)),
            feature_attention_mask=(torch.arange(3000) < 2 * frames).long()[None])
  with torch.no_grad():
    theirs = with_adapter(input_ids=torch.from_numpy(ids), **kw).logits[0].numpy()
    plain = torch_model(input_ids=torch.from_numpy(ids), **kw).logits[0].numpy()
  assert np.max(np.abs(theirs - plain)) > 1e-2  # the adapter was really applied
  np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)
