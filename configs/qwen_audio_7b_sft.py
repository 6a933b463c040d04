"""Qwen-Audio-Chat stage 2 (supervised instruction fine-tuning): audio encoder frozen; LLM,
projector and audio bos/eos trained (spec §6). Starts from a converted (or stage-1 run's) checkpoint;
data from the command line (there is no default data set):

  python -m qwen_audio_jax.train --config=configs/qwen_audio_7b_sft.py --workdir=runs/sft \
      --config.train.init_params_dir=ckpt/qwen-audio \
      --config.data.train_manifest=train.jsonl --config.data.eval_manifest=dev.jsonl

Hyper-parameters of the paper are not public (a hub config hints at ~8000 iterations).
"""

from qwen_audio_jax.train import defaults


def get_config(arg=None):
  del arg
  c = defaults.base_config()
  c.model = defaults.model_block("qwen-audio-7b", dtype="bfloat16", param_dtype="float32",
                                 remat_policy="full")
  c.train.freeze = (r"audio_encoder/.*",)
  c.train.total_steps = 8000
  c.train.batch_size = 128
  c.optim.lr = 1e-5
  c.optim.warmup_steps = 200
  c.optim.weight_decay = 0.1
  c.mesh.ici = (1, -1, 1)
  c.mesh.dcn = (-1, 1, 1)
  c.data.seq_buckets = (1024, 2048)
  c.data.num_workers = 8
  c.checkpoint.every_steps = 500
  c.eval.every_steps = 500
  c.data.sources = []  # no default data: set data.train_manifest / data.corpus (see above)
  return c
