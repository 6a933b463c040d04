"""Model configuration: frozen dataclasses and the named presets.

Shapes and values follow `shared/spec/qwen_audio.md` (§2.1 encoder, §3.1 LLM, §8 Qwen2-Audio).
Run configs (ml-collections, `configs/`) name a preset and may override single fields; they are
turned into these dataclasses by `from_dict`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping

Family = Literal["qwen-audio", "qwen2-audio", "whisper", "qwen"]


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """Whisper-style audio tower. `pool=False` is exactly Whisper's encoder."""

  n_mels: int = 80
  n_ctx: int = 1500  # positional table length = max frames after conv2
  d_model: int = 1280
  n_heads: int = 20
  n_layers: int = 32
  mlp_dim: int = 5120
  ln_eps: float = 1e-5
  pool: bool = True  # AvgPool1d(2, 2) then ln_post (Qwen-Audio); False: ln_post right after the blocks
  # How padded clips in a batch are handled (spec §2.4 / §8):
  #   "crop": Qwen-Audio v1 — mel beyond 2·T_b zeroed, padded frames zeroed, padded keys masked.
  #   "mask": Qwen2-Audio — full window, padded keys masked only.
  padding: Literal["crop", "mask"] = "crop"

  @property
  def head_dim(self) -> int:
    return self.d_model // self.n_heads

  @property
  def n_frames(self) -> int:
    """Mel frames of the full window (2 × n_ctx = 3000 for 30 s)."""
    return 2 * self.n_ctx


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """Qwen-7B (v1) / Qwen2 decoder. Same block; v1 adds dynamic NTK + logn at inference."""

  vocab_size: int = 155947
  d_model: int = 4096
  n_layers: int = 32
  n_heads: int = 32
  n_kv_heads: int = 32
  head_dim: int = 128
  mlp_dim: int = 11008  # each of gate/up (Qwen v1 `intermediate_size` is twice this)
  rms_eps: float = 1e-5
  rope_base: float = 10000.0
  seq_length: int = 2048  # threshold for dynamic NTK and logn (v1, inference only)
  dynamic_ntk: bool = True
  logn_attn: bool = True
  qkv_bias: bool = True
  # One [d_model, 3, heads * head_dim] q|k|v kernel (module `attn/qkv`, the layout of Qwen v1's `c_attn`)
  # instead of three: one projection matmul forward and one input-gradient matmul backward. Needs
  # n_kv_heads == n_heads. Checkpoints convert to either layout (`convert --fused_qkv`, hf-qwen* v1 only).
  fused_qkv: bool = False
  # Rows of the embedding and lm_head are vocab_size rounded up to a multiple of this (1 = no padding),
  # so that a `tensor` mesh axis divides them (128 x tensor keeps every shard 128-aligned). Padded rows
  # are never looked up, their logits are masked in the loss and sliced off every returned output.
  vocab_pad_to: int = 1

  def __post_init__(self):
    if self.fused_qkv and self.n_kv_heads != self.n_heads:
      raise ValueError(f"DecoderConfig.fused_qkv needs n_kv_heads == n_heads, got {self.n_kv_heads} and "
                       f"{self.n_heads} (grouped KV heads keep separate q/k/v kernels)")

  @property
  def padded_vocab(self) -> int:
    """Rows of the embedding table and columns of lm_head (vocab_size rounded up to vocab_pad_to)."""
    if self.vocab_pad_to < 1:
      raise ValueError(f"DecoderConfig.vocab_pad_to must be >= 1, got {self.vocab_pad_to}")
    return -(-self.vocab_size // self.vocab_pad_to) * self.vocab_pad_to


@dataclasses.dataclass(frozen=True)
class WhisperDecoderConfig:
  """Whisper's text decoder (openai `TextDecoder`, transformers `WhisperDecoder`).

  Pre-LN blocks: causal self-attention, cross-attention over the encoder output, GELU MLP; learned
  positions [n_ctx, d_model]; output projection tied to the token embedding. `d_model` must equal the
  encoder's (cross-attention keys/values are projections of the encoder output).
  """

  vocab_size: int = 51865  # 51864 English-only, 51865 multilingual, 51866 large-v3
  n_ctx: int = 448  # learned positions = most tokens (prompt + generated) one decode can hold
  d_model: int = 1280
  n_heads: int = 20
  n_layers: int = 32
  mlp_dim: int = 5120
  ln_eps: float = 1e-5

  @property
  def head_dim(self) -> int:
    return self.d_model // self.n_heads


@dataclasses.dataclass(frozen=True)
class MoweConfig:
  """MoWE-Audio (arXiv 2409.06635): a pool of light "weak" encoders beside the base encoder (model/mowe.py).

  Each weak encoder is this code's AudioEncoder with its own EncoderConfig (n_mels, n_ctx and padding
  must equal the base encoder's; `pool` is forced on so its frames align with the base's pooled frames).
  Their outputs are projected to the LLM width and mixed by a data-independent router (softmax over
  learned logits, the same for every clip) and a data-dependent router (softmax over a linear gate of
  the base encoder's masked mean-pooled features, kept for the top-k); the mixture is added to the
  base projector's output (= projecting the concatenation [base, weighted weak] with a block kernel).
  """

  weak: tuple[EncoderConfig, ...] = ()  # the pool; empty = MoWE off
  top_k: int = 1  # encoders the data-dependent router selects per clip
  routers: Literal["both", "independent", "dependent"] = "both"
  aux_weight: float = 0.1  # L = L_next-token + aux_weight * L_MoWE (load balance of the dependent router)


@dataclasses.dataclass(frozen=True)
class EncoderPetlConfig:
  """Parameter-efficient transfer of the audio encoder (model/petl.py); encoder LoRA uses the run's `lora`
  block with targets under `audio_encoder/layers/...` (train/lora.py)."""

  adapter_reduction: int = 0  # bottleneck adapters of width d_model // reduction; 0 = none
  adapter_kind: Literal["sequential", "parallel"] = "sequential"
  adapter_placement: Literal["mhsa", "ffn", "both"] = "both"
  prompt_tokens: int = 0  # learned tokens prepended to the encoder's block input (dropped at the output)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """A whole model: audio tower, projector and/or LLM, plus numerics options."""

  family: Family = "qwen-audio"
  encoder: EncoderConfig | None = dataclasses.field(default_factory=EncoderConfig)
  decoder: DecoderConfig | None = dataclasses.field(default_factory=DecoderConfig)
  # Whisper's own text decoder (family "whisper" only); None = encoder-only (older converted checkpoints).
  text_decoder: WhisperDecoderConfig | None = None
  # Audio ids in the LLM sequence.
  audio_start_id: int = 155163  # v1 `<audio>`; `</audio>` = start + 1
  audio_end_id: int = 155164
  audio_pad_id: int = 151851  # v1 `[[[AUDIO:modality]]]`; Qwen2-Audio `<|AUDIO|>` = 151646
  audio_bos_eos: bool = True  # v1 learned [2, d] table that overwrites `<audio>`/`</audio>` positions
  pad_id: int = 151643  # `<|endoftext|>`
  # Numerics (see README "Precision policy").
  dtype: str = "float32"  # compute dtype of matmuls/activations
  param_dtype: str = "float32"  # stored dtype of every parameter without a tower override below
  encoder_param_dtype: str | None = None  # audio_encoder params (None: param_dtype), e.g. bf16 when frozen
  decoder_param_dtype: str | None = None  # decoder (LLM) / Whisper text_decoder params (None: param_dtype)
  matmul_precision: Literal["default", "high", "highest"] = "default"
  # Rematerialisation of each scanned layer: names in layers.REMAT_POLICIES.
  remat_policy: Literal["none", "full", "minimal", "save_dot_except_mlpwi", "save_dot_except_mlp",
                        "save_qkv_proj", "save_out_proj", "dots"] = "none"
  # Attention implementation (model/attention.py): auto | xla | chunked | cudnn | splash.
  attention: Literal["auto", "xla", "chunked", "cudnn", "splash"] = "auto"
  attention_chunk: int = 256  # query/key block of "chunked" (about; 1500 frames -> 250; best measured on CPU)
  # Training loss (model/loss.py): the lm_head and cross-entropy run over blocks of about this many
  # vocabulary columns, so [B, S, V] logits never exist (<= 0: one block); optionally also over blocks
  # of `loss_chunk` sequence positions (0: whole sequence; each block then re-reduces the lm_head grad).
  loss_vocab_block: int = 8192
  loss_chunk: int = 0
  mowe: MoweConfig | None = None  # mixture of weak encoders (audio LLM families only)
  encoder_petl: EncoderPetlConfig | None = None  # adapters / prompt tuning on the base audio encoder

  def replace(self, **kw) -> "ModelConfig":
    return dataclasses.replace(self, **kw)

  def tower(self, name: Literal["encoder", "decoder"]) -> "ModelConfig":
    """This config as seen by one tower's modules: `param_dtype` set to that tower's dtype."""
    dtype = self.encoder_param_dtype if name == "encoder" else self.decoder_param_dtype
    return self if dtype is None or dtype == self.param_dtype else dataclasses.replace(self, param_dtype=dtype)


# --------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------

_WHISPER_SIZES = {  # name: (d_model, heads, layers, n_mels, vocab); openai dims, same for both towers
    "tiny": (384, 6, 4, 80, 51865),
    "base": (512, 8, 6, 80, 51865),
    "small": (768, 12, 12, 80, 51865),
    "medium": (1024, 16, 24, 80, 51865),
    "large-v2": (1280, 20, 32, 80, 51865),
    "large-v3": (1280, 20, 32, 128, 51866),
}


def whisper_encoder(size: str) -> EncoderConfig:
  d, h, n, mels, _ = _WHISPER_SIZES[size]
  return EncoderConfig(n_mels=mels, d_model=d, n_heads=h, n_layers=n, mlp_dim=4 * d, pool=False)


def whisper_text_decoder(size: str) -> WhisperDecoderConfig:
  d, h, n, _, vocab = _WHISPER_SIZES[size]
  return WhisperDecoderConfig(vocab_size=vocab, d_model=d, n_heads=h, n_layers=n, mlp_dim=4 * d)


QWEN_7B = DecoderConfig(vocab_size=151936, rms_eps=1e-6)
QWEN_AUDIO_7B_LLM = DecoderConfig()
QWEN2_AUDIO_7B_LLM = DecoderConfig(vocab_size=156032, dynamic_ntk=False, logn_attn=False)

_TINY_ENCODER = EncoderConfig(n_mels=80, n_ctx=1500, d_model=64, n_heads=4, n_layers=2, mlp_dim=256)
_TINY_DECODER = DecoderConfig(vocab_size=155947, d_model=64, n_layers=2, n_heads=4, n_kv_heads=4,
                              head_dim=16, mlp_dim=160, seq_length=2048)
_TINY_TEXT_DECODER = WhisperDecoderConfig(vocab_size=51865, d_model=64, n_heads=4, n_layers=2, mlp_dim=256)


def _presets() -> dict[str, ModelConfig]:
  p: dict[str, ModelConfig] = {}
  for size in _WHISPER_SIZES:
    p[f"whisper-{size}"] = ModelConfig(family="whisper", encoder=whisper_encoder(size), decoder=None,
                                       text_decoder=whisper_text_decoder(size), audio_bos_eos=False)
  p["qwen-7b"] = ModelConfig(family="qwen", encoder=None, decoder=QWEN_7B, audio_bos_eos=False)
  p["qwen-audio-7b"] = ModelConfig(family="qwen-audio", encoder=dataclasses.replace(
      whisper_encoder("large-v2"), pool=True, padding="crop"), decoder=QWEN_AUDIO_7B_LLM)
  p["qwen2-audio-7b"] = ModelConfig(
      family="qwen2-audio",
      encoder=dataclasses.replace(whisper_encoder("large-v3"), pool=True, padding="mask"),
      decoder=QWEN2_AUDIO_7B_LLM, audio_start_id=151647, audio_end_id=151648, audio_pad_id=151646,
      audio_bos_eos=False)
  # Tiny variants for tests and the built-in synthetic run: same architecture, small widths.
  p["tiny-qwen-audio"] = ModelConfig(family="qwen-audio", encoder=_TINY_ENCODER, decoder=_TINY_DECODER)
  p["tiny-qwen2-audio"] = ModelConfig(
      family="qwen2-audio",
      encoder=dataclasses.replace(_TINY_ENCODER, n_mels=128, padding="mask"),
      decoder=dataclasses.replace(_TINY_DECODER, vocab_size=156032, dynamic_ntk=False, logn_attn=False),
      audio_start_id=151647, audio_end_id=151648, audio_pad_id=151646, audio_bos_eos=False)
  p["tiny-whisper"] = ModelConfig(family="whisper", encoder=dataclasses.replace(_TINY_ENCODER, pool=False),
                                  decoder=None, text_decoder=_TINY_TEXT_DECODER, audio_bos_eos=False)
  p["tiny-qwen"] = ModelConfig(family="qwen", encoder=None, decoder=_TINY_DECODER, audio_bos_eos=False)
  return p


PRESETS: dict[str, ModelConfig] = _presets()


def get_config(name: str, **overrides: Any) -> ModelConfig:
  """Returns preset `name`, with top-level fields replaced by `overrides`."""
  if name not in PRESETS:
    raise KeyError(f"unknown model preset {name!r}; known: {', '.join(sorted(PRESETS))}")
  return dataclasses.replace(PRESETS[name], **overrides)


def unpadded(cfg: ModelConfig) -> ModelConfig:
  """`cfg` without vocabulary padding: the shapes of the true model (what other formats store)."""
  if cfg.decoder is None or cfg.decoder.vocab_pad_to == 1:
    return cfg
  return dataclasses.replace(cfg, decoder=dataclasses.replace(cfg.decoder, vocab_pad_to=1))


def to_dict(cfg: ModelConfig) -> dict[str, Any]:
  """Plain dict; the optional `mowe` / `encoder_petl` blocks appear only when set (older files stay as they were)."""
  d = dataclasses.asdict(cfg)
  for key in ("mowe", "encoder_petl"):
    if d[key] is None:
      del d[key]
  return d


def from_dict(d: Mapping[str, Any]) -> ModelConfig:
  """Inverse of `to_dict`; unknown keys raise (a typo must not be ignored silently)."""
  d = dict(d)

  def build(cls, sub):
    if sub is None:
      return None
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(sub) - names
    if unknown:
      raise KeyError(f"unknown {cls.__name__} field(s): {sorted(unknown)}")
    return cls(**sub)

  enc, dec, text = d.pop("encoder", None), d.pop("decoder", None), d.pop("text_decoder", None)
  mowe, petl = d.pop("mowe", None), d.pop("encoder_petl", None)
  if mowe is not None:
    mowe = dict(mowe)
    mowe["weak"] = tuple(w if isinstance(w, EncoderConfig) else build(EncoderConfig, w) for w in mowe.get("weak", ()))
  return build(ModelConfig, {**d, "encoder": build(EncoderConfig, enc), "decoder": build(DecoderConfig, dec),
                             "text_decoder": build(WhisperDecoderConfig, text), "mowe": build(MoweConfig, mowe),
                             "encoder_petl": build(EncoderPetlConfig, petl)})
