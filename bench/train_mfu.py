"""P4: model FLOP utilisation of the CPU training step against the measured float32 matmul peak.

The trainer's jitted step (bench/train_setup.py: plan, AdamW, donated state) of a medium Qwen-Audio
(whisper-base-width 4-layer encoder, 512-wide 4-layer LLM; --quick: the tiny model), all parameters
trained, fp32, batch 4 × 256 tokens with 10 s clips. Model FLOPs per step from train/metrics.py (the
figure the training log reports). The peak is a float32 [2048, 2048] matmul with all threads
(`metrics.cpu_matmul_flops`), timed in the same interleaved rounds as the step.
MFU = (FLOPs / median step time) / (matmul FLOPs / median matmul time), in wall time and in process CPU
time. The CPU-time figure is the reported one: other processes on a shared machine take different
shares of a 10 s step and of a 0.2 s matmul (a loaded machine read the wall-time peak at a quarter of its
quiet value), but not of the CPU time each consumes. On a quiet machine the two agree.
The same run also times the step with the decoder's fused q|k|v layout (`decoder.fused_qkv`) as a ratio.
"""

from __future__ import annotations

import dataclasses

from bench import common, rows, train_setup
from qwen_audio_jax.train import metrics


def _fused(cfg):
  return cfg.replace(decoder=dataclasses.replace(cfg.decoder, fused_qkv=True))


def measure(cfg, shapes: dict, repeats: int, stage: str = "full", fused_qkv: bool = True) -> dict:
  """`fused_qkv`: also time the same step with the decoder's fused q|k|v layout (same run, interleaved)."""
  step = train_setup.make_step(cfg, stage, **shapes)
  matmul, matmul_flops = metrics.cpu_matmul_flops(2048)
  fns = {"step": train_setup.run_fn(step), "peak": matmul}
  if fused_qkv:
    fns["fused"] = train_setup.run_fn(train_setup.make_step(_fused(cfg), stage, **shapes))
  t = common.time_interleaved(fns, repeats)
  peak, peak_best = matmul_flops / t["peak"]["median_s"], matmul_flops / t["peak"]["min_s"]
  achieved = step.flops / t["step"]["median_s"]
  cpu_peak, cpu_achieved = matmul_flops / t["peak"]["cpu_median_s"], step.flops / t["step"]["cpu_median_s"]
  return {"step_s": t["step"]["median_s"], "step_min_s": t["step"]["min_s"], "step_gflop": step.flops / 1e9,
          "achieved_gflops": achieved / 1e9, "peak_gflops": peak / 1e9, "peak_best_gflops": peak_best / 1e9,
          "mfu_wall": achieved / peak, "mfu_best": (step.flops / t["step"]["min_s"]) / peak_best,
          "step_cpu_s": t["step"]["cpu_median_s"], "peak_gflop_per_cpu_s": cpu_peak / 1e9,
          "achieved_gflop_per_cpu_s": cpu_achieved / 1e9, "mfu": cpu_achieved / cpu_peak,
          "repeats": repeats, "shapes": shapes, "attention": cfg.attention, "remat_policy": cfg.remat_policy,
          **({"fused_qkv_step_cpu_s": t["fused"]["cpu_median_s"], "fused_qkv_step_s": t["fused"]["median_s"],
              "fused_qkv_speedup": t["step"]["cpu_median_s"] / t["fused"]["cpu_median_s"]} if fused_qkv else {})}


def row(quick: bool) -> dict:
  if quick:
    name, cfg, shapes = "tiny", train_setup.tiny_config(), dict(batch_size=8, seq_len=128, mel_frames=400)
  else:
    name, cfg, shapes = "medium", train_setup.medium_config(), dict(batch_size=4, seq_len=256, mel_frames=1000)
  r = measure(cfg, shapes, 5)
  return {"ours": f"{name} model train step {r['step_s']:.3f} s ({r['step_cpu_s']:.2f} CPU-s), "
                  f"{r['achieved_gflop_per_cpu_s']:.0f} GFLOP per CPU-s ({r['step_gflop']:.0f} GFLOP/step)",
          "reference": f"fp32 2048² matmul {r['peak_gflop_per_cpu_s']:.0f} GFLOP per CPU-s "
                       f"({r['peak_gflops']:.0f} GFLOP/s wall)",
          "value": r["mfu"], "unit": "fraction", "met": r["mfu"] >= 0.5, "details": r,
          "notes": [f"{name}: batch {shapes['batch_size']} × {shapes['seq_len']} tokens + {shapes['mel_frames']} mel "
                    f"frames, everything trained, fp32, remat {cfg.remat_policy!r}, attention {cfg.attention!r}; "
                    f"MFU in CPU time (reported) {100 * r['mfu']:.1f}%, in wall time {100 * r['mfu_wall']:.1f}% "
                    f"(fastest runs {100 * r['mfu_best']:.1f}%).",
                    f"{name} with the decoder's fused q|k|v kernel (decoder.fused_qkv): {r['fused_qkv_step_cpu_s']:.2f} "
                    f"CPU-s per step vs {r['step_cpu_s']:.2f} separate, {r['fused_qkv_speedup']:.2f}x (same run)."]}


rows.register(rows.Row("P4", "train step MFU on CPU vs measured fp32 matmul peak", ">= 50%", row))
