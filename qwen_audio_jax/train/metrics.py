"""Throughput accounting: model FLOPs per step, peak FLOP/s per device, MFU, the stdout line.

Model FLOPs count matmuls (2 per multiply-add) and attention scores/values, over real tokens for the
LLM and over the full mel window for the audio tower (it always runs the whole window). The training
multiplier per tower is 3 (forward + both backward matmuls) when it has trainable parameters, 2 when
it is frozen but gradients must flow through it to a trainable part below, else 1. The peak is the
dense bf16 peak of one JAX device from a table; on CPU it is a large float32 matmul measured at
start-up (the fastest of several) and divided among the local CPU devices (they share the cores).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

# Dense bf16 peak FLOP/s per JAX device (v2/v3 expose one device per core, later TPUs one per chip).
PEAK_FLOPS = (
    ("TPU v2", 22.5e12), ("TPU v3", 61.5e12), ("TPU v4", 275e12), ("TPU v5 lite", 197e12),
    ("TPU v5e", 197e12), ("TPU v5p", 459e12), ("TPU v5", 459e12), ("TPU v6 lite", 918e12),
    ("TPU v6e", 918e12), ("TPU7x", 2307e12), ("H200", 989e12), ("H100", 989e12), ("A100", 312e12),
    ("L4", 121e12), ("A10", 125e12),
)


def cpu_matmul_flops(n: int = 2048):
  """A zero-argument callable running one float32 [n, n] @ [n, n] product (2 n^3 FLOPs) on CPU
  device 0 to completion, already compiled and warmed up, and its FLOP count."""
  x = jax.device_put(jnp.ones((n, n), jnp.float32), jax.local_devices(backend="cpu")[0])
  f = jax.jit(lambda a: a @ a)
  f(x).block_until_ready()
  return (lambda: f(x).block_until_ready()), 2.0 * n ** 3


def measure_cpu_peak(n: int = 2048, reps: int = 3) -> float:
  """float32 matmul FLOP/s of this process on CPU (XLA's threads, all cores), per local CPU device.

  The fastest of `reps` timed [n, n] products after a warm-up: 17 GFLOP at n = 2048 runs long enough
  to reach the matmul peak (the former 384-wide product took about a millisecond, dominated by
  dispatch, and read far below the peak, so MFU read too high), and the fastest run is the one least
  slowed by other processes. On a machine that stays loaded the peak still reads low and MFU high.
  """
  run, flops = cpu_matmul_flops(n)
  best = float("inf")
  for _ in range(reps):
    t = time.perf_counter()
    run()
    best = min(best, time.perf_counter() - t)
  return flops / best / max(1, jax.local_device_count())


def peak_flops_per_device(device=None, override_tflops: float = 0.0) -> tuple[float, str]:
  """(peak FLOP/s, how it was obtained); `override_tflops` > 0 wins (config log.peak_tflops)."""
  if override_tflops and override_tflops > 0:
    return float(override_tflops) * 1e12, "config log.peak_tflops"
  device = device or jax.local_devices()[0]
  if device.platform == "cpu":
    return measure_cpu_peak(), "measured fp32 matmul / local CPU devices"
  for key, peak in PEAK_FLOPS:
    if key.lower() in device.device_kind.lower():
      return peak, f"table ({device.device_kind})"
  return float("nan"), f"unknown device kind {device.device_kind!r}"


def tower_multipliers(mask: dict, use_lora: bool) -> tuple[int, int]:
  """(encoder, decoder) training multipliers from the trainable mask (see module docstring)."""
  def trains(prefixes):
    return any(m for p, m in mask.items() if p[0] in prefixes)
  enc_trains = trains(("audio_encoder", "mowe"))
  below_dec = enc_trains or trains(("audio_projector", "audio_bos_eos"))
  dec_trains = trains(("decoder",)) or use_lora
  enc = 3 if enc_trains else 1
  dec = 3 if dec_trains else (2 if below_dec else 1)
  return enc, dec


def decoder_flops_per_token(cfg, seq_len: int) -> float:
  d = cfg.decoder
  q, kv = d.n_heads * d.head_dim, d.n_kv_heads * d.head_dim
  per_layer = d.d_model * (q + 2 * kv) + q * d.d_model + 3 * d.d_model * d.mlp_dim
  attn = 2 * seq_len * q / 2  # causal: scores + values over half the context on average
  return 2 * (d.n_layers * per_layer + d.d_model * d.vocab_size) + 2 * d.n_layers * attn


def _tower_flops(e, d_out: int, mel_frames: int, extra_tokens: int = 0) -> float:
  t = (mel_frames + 1) // 2
  conv = mel_frames * 3 * e.n_mels * e.d_model + t * 3 * e.d_model * e.d_model
  s = t + extra_tokens  # encoder prompt tokens (encoder_petl) ride along in every block
  blocks = s * (4 * e.d_model ** 2 + 2 * e.d_model * e.mlp_dim) + 2 * s * s * e.d_model
  return 2 * (conv + e.n_layers * blocks + (t // 2) * e.d_model * d_out)


def encoder_flops_per_clip(cfg, mel_frames: int) -> float:
  """Base encoder + projector, plus every MoWE weak encoder and its projection (all run on every clip);
  bottleneck adapters and routers are not counted (< 1% at the usual reductions)."""
  d_out = cfg.decoder.d_model if cfg.decoder is not None else 0
  petl = getattr(cfg, "encoder_petl", None)
  total = _tower_flops(cfg.encoder, d_out, mel_frames, petl.prompt_tokens if petl is not None else 0)
  mowe = getattr(cfg, "mowe", None)
  for weak in (mowe.weak if mowe is not None else ()):
    total += _tower_flops(weak, d_out, mel_frames)
  return total


def step_flops(cfg, tokens: int, seq_len: int, audio_rows: int, mel_frames: int, mult: tuple[int, int]) -> float:
  """Model FLOPs of one training step over the global batch."""
  total = 0.0
  if cfg.decoder is not None:
    total += mult[1] * tokens * decoder_flops_per_token(cfg, seq_len)
  if cfg.encoder is not None and audio_rows:
    total += mult[0] * audio_rows * encoder_flops_per_clip(cfg, mel_frames)
  return total


def format_line(step: int, total: int, m: dict) -> str:
  parts = [f"step {step}/{total}", f"loss {m['loss']:.4f}"]
  for key, fmt in (("lr", "{:.2e}"), ("grad_norm", "{:.3f}"), ("step_time", "{:.3f}s"),
                   ("examples_per_s", "{:.1f}"), ("audio_s_per_s", "{:.1f}"), ("tokens_per_s", "{:.0f}"),
                   ("tflops_per_device", "{:.4f}"), ("mfu", "{:.2%}")):
    if key in m:
      parts.append(f"{key} " + fmt.format(m[key]))
  usage = sorted(k for k in m if k.startswith("mowe/usage/weak_"))  # MoWE: routing loss, top-k share per encoder
  if "mowe/aux_loss" in m:
    parts.append(f"mowe_aux {m['mowe/aux_loss']:.3f} usage " + "/".join(f"{m[k]:.2f}" for k in usage))
  line = " | ".join(parts)
  by_task = {}  # "mowe/usage/<task>/weak_k" (see `task_usage`)
  for key in sorted(k for k in m if k.startswith("mowe/usage/") and not k.startswith("mowe/usage/weak_")):
    by_task.setdefault(key.split("/")[2], []).append(f"{m[key]:.2f}")
  if by_task:
    line += "\n  mowe usage by task: " + ", ".join(f"{t} {'/'.join(v)}" for t, v in by_task.items())
  return line


TASK_COUNT_KEYS = ("mowe/task_selected", "mowe/task_clips")


def task_usage(steps: list[dict], task_names) -> dict[str, float]:
  """MoWE usage per task over a logging window: {"mowe/usage/<task>/weak_k": share of that task's clips
  whose top-k held weak encoder k}, from the steps' summed "mowe/task_selected" [T, K] and
  "mowe/task_clips" [T] counts (tasks without clips in the window are left out). Pops those counts."""
  counts = [(s.pop(TASK_COUNT_KEYS[0]), s.pop(TASK_COUNT_KEYS[1])) for s in steps if TASK_COUNT_KEYS[0] in s]
  if not counts:
    return {}
  selected, clips = sum(c[0] for c in counts), sum(c[1] for c in counts)
  return {f"mowe/usage/{name}/weak_{k}": float(selected[t, k] / clips[t])
          for t, name in enumerate(task_names) if clips[t] > 0 for k in range(selected.shape[1])}
