"""An exported LoRA adapter is a real HF-PEFT adapter, for both namings, on checkpoints converted with
padded vocabulary rows (`--vocab_pad_to`) and with an lm_head adapter (its padded columns are cut).

* Qwen2-Audio: PEFT applies it to the transformers model and gets the logits of our model, with the
  adapters as a side path (training forward) and merged (`lora.merge`, the merged export).
* Qwen-Audio v1 (fused `c_attn`; transformers has no QWen v1 class): PEFT loads it onto a module tree with
  the v1 names written here, filled from the v1 checkpoint files; after `merge_and_unload` every merged
  weight equals ours.
"""

import glob

import jax
import numpy as np
import peft
import torch
import transformers
from flax import traverse_util
from safetensors.torch import load_file

from conversion import convert, tiny_models, verify
from qwen_audio_jax import checkpoint_io
from qwen_audio_jax.audio import lengths
from qwen_audio_jax.model import Model
from qwen_audio_jax.train import lora as lora_lib, peft_export

RANK, ALPHA = 4, 8.0
TARGETS = (r"decoder/layers/attn/(q|k|v|o)", r"decoder/layers/mlp/(gate|up|down)", r"decoder/lm_head")
ENCODER_TARGETS = (r"audio_encoder/layers/attn/(query|key|value|out)",)  # encoder PETL's LoRA mode
PAD_TO = 128


def trained_looking(params, targets, seed):
  """Adapters with B != 0 (as after training)."""
  lora = lora_lib.init(jax.random.key(0), params, targets, RANK)
  rng = np.random.default_rng(seed)
  return traverse_util.unflatten_dict({
      k: (np.asarray(v) if k[-1] == "lora_a" else 0.05 * rng.standard_normal(v.shape).astype(np.float32))
      for k, v in traverse_util.flatten_dict(lora).items()})


def test_peft_loads_our_qwen2_audio_adapter_and_matches_our_logits(tmp_path):
  torch_model = tiny_models.hf_qwen2_audio(str(tmp_path / "hf"), vocab=500)
  ckpt = convert.convert("hf-qwen2-audio", str(tmp_path / "hf"), str(tmp_path / "orbax"), log=lambda *a: None,
                         vocab_pad_to=PAD_TO)
  cfg, params, _ = checkpoint_io.load_model_checkpoint(ckpt)
  params = jax.tree.map(np.asarray, params)
  assert cfg.decoder.vocab_size == 500 and params["decoder"]["lm_head"]["kernel"].shape == (64, 512)
  assert not params["decoder"]["embed"]["embedding"][500:].any()  # convert pads with zero rows
  lora = trained_looking(params, TARGETS + ENCODER_TARGETS, 1)
  adapter_dir = peft_export.export(lora, str(tmp_path / "adapter"), rank=RANK, alpha=ALPHA, naming="qwen2-audio",
                                   vocab_size=cfg.decoder.vocab_size)

  mel, frames = verify.sample_mel(128, seconds=2.5)
  n = int(lengths.pooled_frames(frames))
  pad = torch_model.config.audio_token_index
  ids = np.array([[3, 7, 11] + [pad] * n + [13, 17, 19, 23]], np.int64)
  inputs = (ids.astype(np.int32), np.ones_like(ids, np.int32), np.asarray(mel), np.array([frames], np.int32))
  scale = lora_lib.scale(RANK, ALPHA)
  side = np.asarray(Model(cfg).apply({"params": params, "lora": lora_lib.collection(lora, scale)}, *inputs))[0]
  merged = np.asarray(Model(cfg).apply({"params": lora_lib.merge(params, lora, scale)}, *inputs))[0]

  base = transformers.Qwen2AudioForConditionalGeneration.from_pretrained(
      str(tmp_path / "hf"), attn_implementation="eager", dtype=torch.float32)
  with_adapter = peft.PeftModel.from_pretrained(base, adapter_dir).eval()
  kw = dict(input_features=torch.from_numpy(np.array(mel)),
            feature_attention_mask=(torch.arange(3000) < 2 * frames).long()[None])
  with torch.no_grad():
    theirs = with_adapter(input_ids=torch.from_numpy(ids), **kw).logits[0].numpy()
    plain = torch_model(input_ids=torch.from_numpy(ids), **kw).logits[0].numpy()
  assert theirs.shape == side.shape == (ids.shape[1], 500)
  assert np.max(np.abs(theirs - plain)) > 1e-2  # the adapter was really applied
  np.testing.assert_allclose(side, theirs, atol=6e-6, rtol=0)  # measured 2.0e-6
  np.testing.assert_allclose(merged, theirs, atol=6e-6, rtol=0)  # measured 1.8e-6


# A module tree with Qwen-Audio v1's module names (QWenLMHeadModel's; only what LoRA adapts here).
class _Attn(torch.nn.Module):
  def __init__(self, d):
    super().__init__()
    self.c_attn, self.c_proj = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d, bias=False)


class _Mlp(torch.nn.Module):
  def __init__(self, d, f):
    super().__init__()
    self.w1, self.w2 = torch.nn.Linear(d, f, bias=False), torch.nn.Linear(d, f, bias=False)
    self.c_proj = torch.nn.Linear(f, d, bias=False)


class _Block(torch.nn.Module):
  def __init__(self, d, f):
    super().__init__()
    self.attn, self.mlp = _Attn(d), _Mlp(d, f)


class _AudioAttn(torch.nn.Module):
  def __init__(self, d):
    super().__init__()
    self.query, self.key = torch.nn.Linear(d, d), torch.nn.Linear(d, d, bias=False)
    self.value, self.out = torch.nn.Linear(d, d), torch.nn.Linear(d, d)


class _AudioBlock(torch.nn.Module):
  def __init__(self, d):
    super().__init__()
    self.attn = _AudioAttn(d)


class _Audio(torch.nn.Module):
  def __init__(self, d, n):
    super().__init__()
    self.blocks = torch.nn.ModuleList([_AudioBlock(d) for _ in range(n)])


class _Transformer(torch.nn.Module):
  def __init__(self, cfg):
    super().__init__()
    dec, enc = cfg.decoder, cfg.encoder
    self.h = torch.nn.ModuleList([_Block(dec.d_model, dec.mlp_dim) for _ in range(dec.n_layers)])
    self.audio = _Audio(enc.d_model, enc.n_layers)


class QWenV1Names(torch.nn.Module):
  def __init__(self, cfg):
    super().__init__()
    self.transformer = _Transformer(cfg)
    self.lm_head = torch.nn.Linear(cfg.decoder.d_model, cfg.decoder.vocab_size, bias=False)

  def prepare_inputs_for_generation(self, *args, **kwargs):  # PEFT's causal-LM wrapper looks this up
    raise NotImplementedError


def test_peft_loads_our_qwen_audio_v1_adapter_and_merges_to_our_weights(tmp_path):
  tiny_models.hf_qwen_audio(str(tmp_path / "v1"))
  ckpt = convert.convert("hf-qwen-audio", str(tmp_path / "v1"), str(tmp_path / "orbax"), log=lambda *a: None,
                         vocab_pad_to=PAD_TO)
  cfg, params, _ = checkpoint_io.load_model_checkpoint(ckpt)
  params = jax.tree.map(np.asarray, params)
  v = cfg.decoder.vocab_size
  assert v == 155947 and params["decoder"]["lm_head"]["kernel"].shape[1] == 156032
  lora = trained_looking(params, TARGETS + ENCODER_TARGETS, 2)
  adapter_dir = peft_export.export(lora, str(tmp_path / "adapter"), rank=RANK, alpha=ALPHA, naming="qwen-audio",
                                   vocab_size=v)

  torch_model = QWenV1Names(cfg)
  state = {}
  for f in glob.glob(str(tmp_path / "v1" / "*.safetensors")):
    state.update(load_file(f))
  missing, _ = torch_model.load_state_dict(state, strict=False)
  assert not missing
  base = {k: t.clone() for k, t in torch_model.state_dict().items()}
  merged_torch = peft.PeftModel.from_pretrained(torch_model, adapter_dir).merge_and_unload().state_dict()

  ours = lora_lib.merge(params, lora, lora_lib.scale(RANK, ALPHA))
  t = lambda x: np.asarray(x, np.float32).T
  dec, enc = ours["decoder"]["layers"], ours["audio_encoder"]["layers"]
  expected = {"lm_head.weight": t(ours["decoder"]["lm_head"]["kernel"][:, :v])}
  for i in range(cfg.decoder.n_layers):
    p = f"transformer.h.{i}."
    expected[p + "attn.c_attn.weight"] = np.concatenate([t(dec["attn"][x]["kernel"][i]) for x in "qkv"])
    expected[p + "attn.c_attn.bias"] = np.concatenate([dec["attn"][x]["bias"][i] for x in "qkv"])
    expected[p + "attn.c_proj.weight"] = t(dec["attn"]["o"]["kernel"][i])
    expected[p + "mlp.w1.weight"] = t(dec["mlp"]["up"]["kernel"][i])
    expected[p + "mlp.w2.weight"] = t(dec["mlp"]["gate"]["kernel"][i])
    expected[p + "mlp.c_proj.weight"] = t(dec["mlp"]["down"]["kernel"][i])
  for i in range(cfg.encoder.n_layers):
    for x in ("query", "key", "value", "out"):
      expected[f"transformer.audio.blocks.{i}.attn.{x}.weight"] = t(enc["attn"][x]["kernel"][i])
  assert set(expected) <= set(merged_torch)
  for name, want in expected.items():
    np.testing.assert_allclose(merged_torch[name].numpy(), want, atol=1e-6, rtol=0, err_msg=name)  # measured 0
    if name.endswith("weight"):
      assert np.max(np.abs(merged_torch[name].numpy() - base[name].numpy())) > 1e-3, name  # really adapted
