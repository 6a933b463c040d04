"""LLM tables: Qwen-7B v1 naming (spec §3.5) and Qwen2 / transformers naming (spec §8).

Rows: (suffix, param path(s) under `decoder`, transform). v1 `w2` is the SiLU ("gate") branch and
`w1` the linear ("up") branch; the fused `c_attn` rows are q|k|v.
"""

from conversion.maps.schema import LAYER, prefixed

V1_TOP = (
    ("transformer.wte.weight", "embed/embedding", "identity"),
    ("transformer.ln_f.weight", "final_norm/scale", "identity"),
    ("lm_head.weight", "lm_head/kernel", "linear"),
)
V1_BLOCK = (
    ("ln_1.weight", "ln_1/scale", "identity"),
    ("attn.c_attn.weight", ("attn/q/kernel", "attn/k/kernel", "attn/v/kernel"), "split_qkv_linear"),
    ("attn.c_attn.bias", ("attn/q/bias", "attn/k/bias", "attn/v/bias"), "split_qkv_bias"),
    # The fused layout (DecoderConfig.fused_qkv) keeps c_attn whole; the rows whose targets the config's
    # parameter tree has are the ones used (engine.active_rules).
    ("attn.c_attn.weight", "attn/qkv/kernel", "fused_qkv_linear"),
    ("attn.c_attn.bias", "attn/qkv/bias", "fused_qkv_bias"),
    ("attn.c_proj.weight", "attn/o/kernel", "linear"),
    ("ln_2.weight", "ln_2/scale", "identity"),
    ("mlp.w1.weight", "mlp/up/kernel", "linear"),
    ("mlp.w2.weight", "mlp/gate/kernel", "linear"),
    ("mlp.c_proj.weight", "mlp/down/kernel", "linear"),
)
# Buffers some v1 `.bin` files contain; not parameters, carried through untouched.
V1_BUFFERS = (r"\.rotary_emb\.inv_freq\Z", r"\.attn\.masked_bias\Z", r"\.attn\.bias\Z")

QWEN2_TOP = (
    ("model.embed_tokens.weight", "embed/embedding", "identity"),
    ("model.norm.weight", "final_norm/scale", "identity"),
    ("lm_head.weight", "lm_head/kernel", "linear"),
)
QWEN2_BLOCK = (
    ("input_layernorm.weight", "ln_1/scale", "identity"),
    ("self_attn.q_proj.weight", "attn/q/kernel", "linear"),
    ("self_attn.q_proj.bias", "attn/q/bias", "identity"),
    ("self_attn.k_proj.weight", "attn/k/kernel", "linear"),
    ("self_attn.k_proj.bias", "attn/k/bias", "identity"),
    ("self_attn.v_proj.weight", "attn/v/kernel", "linear"),
    ("self_attn.v_proj.bias", "attn/v/bias", "identity"),
    ("self_attn.o_proj.weight", "attn/o/kernel", "linear"),
    ("post_attention_layernorm.weight", "ln_2/scale", "identity"),
    ("mlp.gate_proj.weight", "mlp/gate/kernel", "linear"),
    ("mlp.up_proj.weight", "mlp/up/kernel", "linear"),
    ("mlp.down_proj.weight", "mlp/down/kernel", "linear"),
)
QWEN2_BUFFERS = (r"\.rotary_emb\.inv_freq\Z",)


def v1_rules():
  return (prefixed("", V1_TOP, path_prefix="decoder/")
          + prefixed("transformer.", V1_BLOCK, layer_prefix=f"h.{LAYER}.", path_prefix="decoder/layers/"))


def qwen2_rules(prefix: str):
  """Qwen2ForCausalLM names under `prefix` ("" standalone, "language_model." inside Qwen2-Audio)."""
  return (prefixed(prefix, QWEN2_TOP, path_prefix="decoder/")
          + prefixed(prefix + "model.", QWEN2_BLOCK, layer_prefix=f"layers.{LAYER}.",
                     path_prefix="decoder/layers/"))
