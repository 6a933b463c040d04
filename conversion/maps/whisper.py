"""Whisper tables (spec §2.7): encoder and text decoder, openai/Qwen-Audio-v1 naming and transformers naming.

Rows: (openai suffix, transformers suffix, param path under `audio_encoder` / `text_decoder`, transform[, default]).
"""

from conversion.maps.schema import LAYER, prefixed

ENCODER_TOP = (
    ("conv1.weight", "conv1.weight", "conv1/kernel", "conv"),
    ("conv1.bias", "conv1.bias", "conv1/bias", "identity"),
    ("conv2.weight", "conv2.weight", "conv2/kernel", "conv"),
    ("conv2.bias", "conv2.bias", "conv2/bias", "identity"),
    ("positional_embedding", "embed_positions.weight", "embed_positions", "identity"),
    ("ln_post.weight", "layer_norm.weight", "ln_post/scale", "identity"),
    ("ln_post.bias", "layer_norm.bias", "ln_post/bias", "identity"),
)

# One residual block; the key projection has no bias.
ENCODER_BLOCK = (
    ("attn.query.weight", "self_attn.q_proj.weight", "attn/query/kernel", "linear"),
    ("attn.query.bias", "self_attn.q_proj.bias", "attn/query/bias", "identity"),
    ("attn.key.weight", "self_attn.k_proj.weight", "attn/key/kernel", "linear"),
    ("attn.value.weight", "self_attn.v_proj.weight", "attn/value/kernel", "linear"),
    ("attn.value.bias", "self_attn.v_proj.bias", "attn/value/bias", "identity"),
    ("attn.out.weight", "self_attn.out_proj.weight", "attn/out/kernel", "linear"),
    ("attn.out.bias", "self_attn.out_proj.bias", "attn/out/bias", "identity"),
    ("attn_ln.weight", "self_attn_layer_norm.weight", "attn_ln/scale", "identity"),
    ("attn_ln.bias", "self_attn_layer_norm.bias", "attn_ln/bias", "identity"),
    ("mlp.0.weight", "fc1.weight", "mlp/fc1/kernel", "linear"),
    ("mlp.0.bias", "fc1.bias", "mlp/fc1/bias", "identity"),
    ("mlp.2.weight", "fc2.weight", "mlp/fc2/kernel", "linear"),
    ("mlp.2.bias", "fc2.bias", "mlp/fc2/bias", "identity"),
    ("mlp_ln.weight", "final_layer_norm.weight", "mlp_ln/scale", "identity"),
    ("mlp_ln.bias", "final_layer_norm.bias", "mlp_ln/bias", "identity"),
)

# Text decoder: a block = ENCODER_BLOCK (its self-attention) + cross-attention; key projections have no bias.
DECODER_CROSS = (
    ("cross_attn.query.weight", "encoder_attn.q_proj.weight", "cross_attn/query/kernel", "linear"),
    ("cross_attn.query.bias", "encoder_attn.q_proj.bias", "cross_attn/query/bias", "identity"),
    ("cross_attn.key.weight", "encoder_attn.k_proj.weight", "cross_attn/key/kernel", "linear"),
    ("cross_attn.value.weight", "encoder_attn.v_proj.weight", "cross_attn/value/kernel", "linear"),
    ("cross_attn.value.bias", "encoder_attn.v_proj.bias", "cross_attn/value/bias", "identity"),
    ("cross_attn.out.weight", "encoder_attn.out_proj.weight", "cross_attn/out/kernel", "linear"),
    ("cross_attn.out.bias", "encoder_attn.out_proj.bias", "cross_attn/out/bias", "identity"),
    ("cross_attn_ln.weight", "encoder_attn_layer_norm.weight", "cross_attn_ln/scale", "identity"),
    ("cross_attn_ln.bias", "encoder_attn_layer_norm.bias", "cross_attn_ln/bias", "identity"),
)
DECODER_TOP = (  # the output projection is tied to token_embedding (transformers' proj_out.weight)
    ("token_embedding.weight", "embed_tokens.weight", "embed/embedding", "identity"),
    ("positional_embedding", "embed_positions.weight", "embed_positions", "identity"),
    ("ln.weight", "layer_norm.weight", "ln/scale", "identity"),
    ("ln.bias", "layer_norm.bias", "ln/bias", "identity"),
)
DECODER_BLOCK = ENCODER_BLOCK + DECODER_CROSS
# Tensors that repeat another one: (name, the tensor it must equal). Carried for a bit-exact export.
HF_TIED = (("proj_out.weight", "model.decoder.embed_tokens.weight"),)
# Text-decoder tensors per naming (dropped by --source=compose, which keeps only the encoder).
TEXT_DECODER_TENSORS = {"openai-whisper": (r"^decoder\.",), "hf-whisper": (r"^model\.decoder\.", r"^proj_out\.")}


def encoder_rules(prefix: str, naming: str):
  """Encoder rules under `prefix` ("encoder.", "transformer.audio.", "model.encoder.", ...).

  naming "openai": openai/v1 suffixes, blocks.N, optional positional buffer (recomputed if absent);
  naming "hf": transformers suffixes, layers.N.
  """
  col, blocks = (0, "blocks.") if naming == "openai" else (1, "layers.")
  top = []
  for row in ENCODER_TOP:
    default = ("sinusoids",) if naming == "openai" and row[2] == "embed_positions" else ()
    top.append((row[col], row[2], row[3], *default))
  block = [(row[col], row[2], row[3]) for row in ENCODER_BLOCK]
  return (prefixed(prefix, top, path_prefix="audio_encoder/")
          + prefixed(prefix, block, layer_prefix=blocks + LAYER + ".", path_prefix="audio_encoder/layers/"))


def decoder_rules(prefix: str, naming: str):
  """Text-decoder rules under `prefix` ("decoder." openai, "model.decoder." transformers)."""
  col, blocks = (0, "blocks.") if naming == "openai" else (1, "layers.")
  top = [(row[col], row[2], row[3]) for row in DECODER_TOP]
  block = [(row[col], row[2], row[3]) for row in DECODER_BLOCK]
  return (prefixed(prefix, top, path_prefix="text_decoder/")
          + prefixed(prefix, block, layer_prefix=blocks + LAYER + ".", path_prefix="text_decoder/layers/"))


def decoder_renames() -> tuple[tuple[str, str], ...]:
  """openai `decoder.*` <-> transformers `model.decoder.*` names (patterns with {i}); used to export the text
  decoder that older (encoder-only) conversions carried in carried.safetensors."""
  pairs = [("decoder." + row[0], "model.decoder." + row[1]) for row in DECODER_TOP]
  for row in DECODER_BLOCK:
    pairs.append((f"decoder.blocks.{LAYER}.{row[0]}", f"model.decoder.layers.{LAYER}.{row[1]}"))
  return tuple(pairs)
