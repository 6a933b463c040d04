"""P4: model FLOP utilisation of the CPU training step against the measured float32 matmul peak.

The trainer's jitted step (bench/train_setup.py: plan, AdamW, donated state) of a medium Qwen-Audio
(whisper-base-width 4-layer encoder, 512-wide 4-layer LLM; --quick: the tiny model), all parameters
trained, fp32, batch 4 × 256 tokens with 10 s clips. Model FLOPs per step from train/metrics.py (the
figure the training log reports). The peak is a float32 [2048, 2048] matmul with all threads
(`metrics.cpu_matmul_flops`), timed in the same interleaved rounds as the step, so load from other
processes hits both alike; MFU = (FLOPs / median step time) / (matmul FLOPs / median matmul time).
"""

from __future__ import annotations

from bench import common, rows, train_setup
from qwen_audio_jax.train import metrics


def measure(cfg, shapes: dict, repeats: int, stage: str = "full") -> dict:
  step = train_setup.make_step(cfg, stage, **shapes)
  matmul, matmul_flops = metrics.cpu_matmul_flops(2048)
  t = common.time_interleaved({"step": train_setup.run_fn(step), "peak": matmul}, repeats)
  peak, peak_best = matmul_flops / t["peak"]["median_s"], matmul_flops / t["peak"]["min_s"]
  achieved = step.flops / t["step"]["median_s"]
  return {"step_s": t["step"]["median_s"], "step_min_s": t["step"]["min_s"], "step_gflop": step.flops / 1e9,
          "achieved_gflops": achieved / 1e9, "peak_gflops": peak / 1e9, "peak_best_gflops": peak_best / 1e9,
          "mfu": achieved / peak, "mfu_best": (step.flops / t["step"]["min_s"]) / peak_best,
          "repeats": repeats, "shapes": shapes, "attention": cfg.attention, "remat_policy": cfg.remat_policy}


def row(quick: bool) -> dict:
  if quick:
    name, cfg, shapes = "tiny", train_setup.tiny_config(), dict(batch_size=8, seq_len=128, mel_frames=400)
  else:
    name, cfg, shapes = "medium", train_setup.medium_config(), dict(batch_size=4, seq_len=256, mel_frames=1000)
  r = measure(cfg, shapes, 5)
  return {"ours": f"{name} model train step {r['step_s']:.3f} s, {r['achieved_gflops']:.0f} GFLOP/s "
                  f"({r['step_gflop']:.0f} GFLOP/step)",
          "reference": f"fp32 matmul peak {r['peak_gflops']:.0f} GFLOP/s (best run {r['peak_best_gflops']:.0f})",
          "value": r["mfu"], "unit": "fraction", "met": r["mfu"] >= 0.5, "details": r,
          "notes": [f"{name}: batch {shapes['batch_size']} × {shapes['seq_len']} tokens + {shapes['mel_frames']} mel "
                    f"frames, everything trained, fp32, remat {cfg.remat_policy!r}; MFU from the fastest runs "
                    f"{100 * r['mfu_best']:.1f}%."]}


rows.register(rows.Row("P4", "train step MFU on CPU vs measured fp32 matmul peak", ">= 50%", row))
