"""A small Qwen-Audio-architecture model on the built-in synthetic multi-task set (CPU, minutes).

`python -m qwen_audio_jax.train --config=configs/tiny_synthetic.py --workdir=/tmp/tiny`
Arg: `:steps` (default 150), e.g. `configs/tiny_synthetic.py:60`.
"""

from qwen_audio_jax.train import defaults


def get_config(arg=None):
  c = defaults.base_config()
  # remat "minimal" (recompute attention/elementwise, keep matmul outputs): measured on 2 CPU cores
  # (bench/remat_policies.py, CPU-seconds per step): this model's step 0.17 s under every policy but "none"
  # (0.20 s; memory 55 vs 107 MiB); a 4+4-layer 512-wide model 4.77 s ("none" 4.78, "full" 5.08,
  # "save_qkv_proj" 4.93) with 576 MiB instead of 1034 MiB.
  c.model = defaults.model_block("tiny-qwen-audio", remat_policy="minimal")
  c.train.total_steps = int(arg) if arg else 150
  c.train.batch_size = 8
  c.train.mel_frames = 400  # synthetic clips are <= 3.5 s (350 frames); longer ones raise
  c.train.specaugment.freq_width = 8
  c.train.specaugment.time_width = 20
  c.optim.lr = 2e-3
  c.optim.warmup_steps = 20
  c.optim.weight_decay = 0.01
  c.data.seq_buckets = (128, 256)
  c.data.sources = [dict(name="synthetic", weight=1.0, split="train", size=10000)]
  c.checkpoint.every_steps = 50
  c.checkpoint.keep = 2
  c.checkpoint.best_keep = 1
  c.eval.every_steps = 50
  c.eval.batches = 2
  c.log.every_steps = 5
  return c
