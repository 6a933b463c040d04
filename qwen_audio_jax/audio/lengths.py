"""Audio-length arithmetic of spec §1.4, in exactly one place.

samples → mel frames → encoder frames (after conv2, "T") → LLM audio tokens (after the avg-pool, "n").
Every function works on Python ints, numpy arrays and jax arrays alike (integer floor division only).
"""

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE  # 480 000
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames per window
MAX_ENCODER_FRAMES = N_FRAMES // 2  # 1500 (n_ctx)
MAX_AUDIO_TOKENS = MAX_ENCODER_FRAMES // 2  # 750


def mel_frames(num_samples):
  """Valid mel frames of a clip, capped at the 30 s window (Qwen-Audio: floor(L / 160))."""
  capped = num_samples if not hasattr(num_samples, "clip") else num_samples.clip(max=N_SAMPLES)
  if isinstance(capped, int):
    capped = min(capped, N_SAMPLES)
  return capped // HOP_LENGTH


def encoder_frames(n_mel_frames):
  """Frames after conv1 (k3 s1 p1) and conv2 (k3 s2 p1): T = (mel_len - 1) // 2 + 1."""
  return (n_mel_frames - 1) // 2 + 1


def pooled_frames(n_encoder_frames):
  """Frames after AvgPool1d(2, 2): n = (T - 2) // 2 + 1 (== T // 2 for T >= 1)."""
  return (n_encoder_frames - 2) // 2 + 1


def audio_tokens(num_samples):
  """LLM audio tokens of a clip (without the audio bos/eos)."""
  return pooled_frames(encoder_frames(mel_frames(num_samples)))


def audio_span(num_samples):
  """Qwen-Audio span: `<audio>` + n placeholders + `</audio>`."""
  return audio_tokens(num_samples) + 2
