"""Whisper encoder tables (spec §2.7): openai/Qwen-Audio-v1 naming and transformers naming.

Rows: (openai suffix, transformers suffix, param path under `audio_encoder`, transform[, default]).
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

# Extra decoder-block tensors (cross-attention), for renaming the carried Whisper text decoder.
DECODER_BLOCK_EXTRA = (
    ("cross_attn.query.weight", "encoder_attn.q_proj.weight"),
    ("cross_attn.query.bias", "encoder_attn.q_proj.bias"),
    ("cross_attn.key.weight", "encoder_attn.k_proj.weight"),
    ("cross_attn.value.weight", "encoder_attn.v_proj.weight"),
    ("cross_attn.value.bias", "encoder_attn.v_proj.bias"),
    ("cross_attn.out.weight", "encoder_attn.out_proj.weight"),
    ("cross_attn.out.bias", "encoder_attn.out_proj.bias"),
    ("cross_attn_ln.weight", "encoder_attn_layer_norm.weight"),
    ("cross_attn_ln.bias", "encoder_attn_layer_norm.bias"),
)
DECODER_TOP = (
    ("token_embedding.weight", "embed_tokens.weight"),
    ("positional_embedding", "embed_positions.weight"),
    ("ln.weight", "layer_norm.weight"),
    ("ln.bias", "layer_norm.bias"),
)


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


def decoder_renames() -> tuple[tuple[str, str], ...]:
  """openai `decoder.*` <-> transformers `model.decoder.*` names (patterns with {i})."""
  pairs = [("decoder." + a, "model.decoder." + b) for a, b in DECODER_TOP]
  for row in ENCODER_BLOCK + DECODER_BLOCK_EXTRA:
    pairs.append((f"decoder.blocks.{LAYER}.{row[0]}", f"model.decoder.layers.{LAYER}.{row[1]}"))
  return tuple(pairs)
