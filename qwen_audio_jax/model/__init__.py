"""The model: configs, the Flax Linen modules, parameter trees, KV cache, loss and Whisper decoding."""

from qwen_audio_jax.model import whisper_decode
from qwen_audio_jax.model.config import (PRESETS, DecoderConfig, EncoderConfig, ModelConfig, WhisperDecoderConfig,
                                         from_dict, get_config, to_dict, unpadded)
from qwen_audio_jax.model.kv_cache import KVCache, abstract_cache, init_cache
from qwen_audio_jax.model.loss import chunked_loss, loss_fn
from qwen_audio_jax.model.multimodal import Model, check_config, forward
from qwen_audio_jax.model.params import abstract_params, count_params, init_params, logical_axes
from qwen_audio_jax.model.splice import AudioPlaceholderError, check_audio_placeholders

__all__ = [
    "AudioPlaceholderError",
    "DecoderConfig",
    "EncoderConfig",
    "KVCache",
    "Model",
    "ModelConfig",
    "PRESETS",
    "WhisperDecoderConfig",
    "abstract_cache",
    "abstract_params",
    "check_audio_placeholders",
    "check_config",
    "chunked_loss",
    "count_params",
    "forward",
    "from_dict",
    "get_config",
    "init_cache",
    "init_params",
    "logical_axes",
    "loss_fn",
    "to_dict",
    "whisper_decode",
    "unpadded",
]
