"""Audio front end: loading, the Whisper log-mel, length arithmetic and the >30 s policy."""

from qwen_audio_jax.audio.lengths import (
    CHUNK_SECONDS,
    HOP_LENGTH,
    MAX_AUDIO_TOKENS,
    MAX_ENCODER_FRAMES,
    N_FFT,
    N_FRAMES,
    N_SAMPLES,
    SAMPLE_RATE,
    audio_span,
    audio_tokens,
    encoder_frames,
    mel_frames,
    pooled_frames,
)
from qwen_audio_jax.audio.load import AudioError, load_audio
from qwen_audio_jax.audio.long_audio import POLICIES, ClipInfo, ClipWindow, features_for_clip, prepare_clip
from qwen_audio_jax.audio.mel import SUPPORTED_N_MELS, log_mel_spectrogram, mel_filters, pad_or_trim

__all__ = [
    "AudioError",
    "CHUNK_SECONDS",
    "ClipInfo",
    "ClipWindow",
    "HOP_LENGTH",
    "MAX_AUDIO_TOKENS",
    "MAX_ENCODER_FRAMES",
    "N_FFT",
    "N_FRAMES",
    "N_SAMPLES",
    "POLICIES",
    "SAMPLE_RATE",
    "SUPPORTED_N_MELS",
    "audio_span",
    "audio_tokens",
    "encoder_frames",
    "features_for_clip",
    "load_audio",
    "log_mel_spectrogram",
    "mel_filters",
    "mel_frames",
    "pad_or_trim",
    "pooled_frames",
    "prepare_clip",
]
