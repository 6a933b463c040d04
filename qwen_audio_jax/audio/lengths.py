"""Audio-length arithmetic of spec §1.4, in exactly one place.

samples → mel frames → encoder frames (after conv2, "T") → LLM audio tokens (after the avg-pool, "n").
Every function works on Python ints, numpy arrays and jax arrays alike (integer division only).

The one family difference is how samples become valid mel frames: Qwen-Audio's `process_audio` floors
(L // 160); Qwen2-Audio's processor (transformers' WhisperFeatureExtractor attention mask taken every
160th sample) rounds up, so e.g. 16 321 samples give 25 audio tokens for Qwen-Audio, 26 for Qwen2-Audio.
"""

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE  # 480 000
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames per window
MAX_ENCODER_FRAMES = N_FRAMES // 2  # 1500 (n_ctx)
MAX_AUDIO_TOKENS = MAX_ENCODER_FRAMES // 2  # 750


CEIL_MEL_FAMILIES = ("qwen2-audio",)  # every other family floors (Qwen-Audio, Whisper)


def mel_frames(num_samples, family: str = "qwen-audio"):
  """Valid mel frames of a clip, capped at the 30 s window: floor(L / 160), ceil for Qwen2-Audio."""
  capped = num_samples if not hasattr(num_samples, "clip") else num_samples.clip(max=N_SAMPLES)
  if isinstance(capped, int):
    capped = min(capped, N_SAMPLES)
  if family in CEIL_MEL_FAMILIES:
    return (capped + HOP_LENGTH - 1) // HOP_LENGTH
  return capped // HOP_LENGTH


def encoder_frames(n_mel_frames):
  """Frames after conv1 (k3 s1 p1) and conv2 (k3 s2 p1): T = (mel_len - 1) // 2 + 1."""
  return (n_mel_frames - 1) // 2 + 1


def pooled_frames(n_encoder_frames):
  """Frames after AvgPool1d(2, 2): n = (T - 2) // 2 + 1 (== T // 2 for T >= 1)."""
  return (n_encoder_frames - 2) // 2 + 1


def audio_tokens(num_samples, family: str = "qwen-audio"):
  """LLM audio tokens of a clip (without the audio bos/eos)."""
  return pooled_frames(encoder_frames(mel_frames(num_samples, family)))


def audio_span(num_samples, family: str = "qwen-audio"):
  """Audio span in the LLM sequence: bos (`<audio>` / `<|audio_bos|>`) + n placeholders + eos."""
  return audio_tokens(num_samples, family) + 2
