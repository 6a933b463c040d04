"""Registry: one NameMap per checkpoint format (`--source` of convert, `--target` of export)."""

from conversion.maps import qwen, whisper
from conversion.maps.schema import NameMap, Rule, prefixed

V1_AUDIO_EXTRA = (
    ("proj.weight", "audio_projector/kernel", "linear"),
    ("proj.bias", "audio_projector/bias", "identity"),
    ("audio_bos_eos_token.weight", "audio_bos_eos/embedding", "identity"),
)
QWEN2_AUDIO_EXTRA = (
    ("linear.weight", "audio_projector/kernel", "linear"),
    ("linear.bias", "audio_projector/bias", "identity"),
)

MAPS: dict[str, NameMap] = {
    "openai-whisper": NameMap(
        family="whisper",
        rules=whisper.encoder_rules("encoder.", "openai") + whisper.decoder_rules("decoder.", "openai")),
    "hf-whisper": NameMap(
        family="whisper",
        rules=whisper.encoder_rules("model.encoder.", "hf") + whisper.decoder_rules("model.decoder.", "hf"),
        carry=(r"^proj_out\.weight\Z",), tied=whisper.HF_TIED),
    "hf-qwen": NameMap(family="qwen", rules=qwen.v1_rules(), carry=qwen.V1_BUFFERS),
    "hf-qwen-audio": NameMap(
        family="qwen-audio",
        rules=(whisper.encoder_rules("transformer.audio.", "openai")
               + prefixed("transformer.audio.", V1_AUDIO_EXTRA) + qwen.v1_rules()),
        carry=qwen.V1_BUFFERS),
    "hf-qwen2-audio": NameMap(
        family="qwen2-audio",
        rules=(whisper.encoder_rules("audio_tower.", "hf")
               + prefixed("multi_modal_projector.", QWEN2_AUDIO_EXTRA)
               + qwen.qwen2_rules("language_model.")),
        carry=qwen.QWEN2_BUFFERS,
        # transformers >= 5 in-memory names (what `model.state_dict()` returns) -> hub names.
        aliases=((r"model\.language_model\.", "language_model.model."),
                 (r"model\.audio_tower\.", "audio_tower."),
                 (r"model\.multi_modal_projector\.", "multi_modal_projector."),
                 (r"lm_head\.", "language_model.lm_head."))),
}

FAMILY_OF = {name: m.family for name, m in MAPS.items()}

__all__ = ["MAPS", "FAMILY_OF", "NameMap", "Rule"]
